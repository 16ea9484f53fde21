"""benchmarks/throughput.py: the plain loop is the same step as das's, a tiny run writes every figure, bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import throughput as tp
from das.distill.module import DistillModule
from das.errors import DasError


def test_the_plain_floor_computes_das_s_objective() -> None:
    torch.manual_seed(0)
    module = DistillModule("resnet20", teacher="resnet32", num_classes=10, input_size=(3, 16, 16))
    module.train()
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6)
    assert len(module.pairs) == 3  # stage-wise cosine: the floor must hook all three
    assert tp.plain_loss(module)(x, y).item() == pytest.approx(tp.das_loss(module)(x, y).item(), rel=1e-5)


def test_the_plain_floor_of_a_logits_only_objective_hooks_nothing() -> None:
    torch.manual_seed(0)
    losses = {"ce": 0.9, "kd": {"weight": 0.1, "temperature": 4.0}}  # torchdistill's CIFAR-10 KD, no feature loss
    module = DistillModule("resnet20", teacher="resnet32", num_classes=10, losses=losses, input_size=(3, 16, 16))
    module.train()
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6)
    loss = tp.plain_loss(module, ce=0.9, kd=0.1, temperature=4.0, cosine=0.0)
    assert not any(m._forward_hooks for m in [*module.student.modules(), *module.teacher.modules()])
    assert loss(x, y).item() == pytest.approx(tp.das_loss(module)(x, y).item(), rel=1e-5)


def test_the_compiled_plain_floor_still_sees_its_feature_maps() -> None:
    """--compile on: the floor runs the same compiled forwards as das (module.forward_of) and its hooks on the
    paired modules still fire, so its loss is das's, cosine term included (wrapping the modules broke this once)."""
    torch.manual_seed(0)
    tiny = "tests.tinynets:TinyNet"
    module = DistillModule(tiny, teacher=tiny, num_classes=10, input_size=(3, 8, 8), feature_pairs="final", compile=True)
    module.train()
    x, y = torch.randn(6, 3, 8, 8), torch.arange(6)
    with_features = tp.plain_loss(module)(x, y)
    assert len(module._compiled) == 2
    assert with_features.item() == pytest.approx(tp.das_loss(module)(x, y).item(), rel=1e-5)
    logits_only = tp.plain_loss(module, cosine=0.0)(x, y)
    assert with_features.item() - logits_only.item() > 1e-4  # the cosine term was computed from captured maps


def test_a_tiny_run_writes_every_figure(tmp_path) -> None:
    out = tmp_path / "tp.json"
    assert tp.main(["--cases", "a", "--amp", "off,bf16", "--steps", "1", "--warmup", "0", "--archs", "1", "--batch", "4",
                    "--size", "16", "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU")
    rows = result["cases"]["a"]["training"]
    assert [r["amp"] for r in rows] == ["off", "bf16"]
    assert all(r["das_images_per_s"] > 0 and r["plain_images_per_s"] > 0 and len(r["runs"]["das"]) == 2 for r in rows)
    assert result["cases"]["a"]["scoring"]["archs"] == 1 and result["cases"]["a"]["scoring"]["archs_per_s"] > 0


@pytest.mark.parametrize(("flags", "words"), [
    (["--cases", "z"], "--cases"),
    (["--amp", "fp8"], "--amp"),
    (["--amp", "fp16", "--device", "cpu"], "fp16 needs CUDA"),
    (["--compile", "maybe"], "--compile"),
    (["--steps", "0"], "--steps"),
])
def test_bad_input_is_one_line(flags, words, tmp_path) -> None:
    with pytest.raises(DasError, match=words):
        tp.main([*flags, "--out", str(tmp_path / "x.json")])
