"""benchmarks/prune_at_init_cifar.py and slim_resnet56.py on a tiny fake CIFAR pair: every run recorded, resume, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import prune_at_init_cifar, slim_resnet56
from das.errors import DasError
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_data(tmp_path: Path) -> list[str]:
    write_fake_cifar(tmp_path / "train.npz", 96)
    write_fake_cifar(tmp_path / "test.npz", 40, seed=1)
    return ["--train-file", str(tmp_path / "train.npz"), "--test-file", str(tmp_path / "test.npz"), "--train-images", "60",
            "--val-images", "20", "--epochs", "1", "--batch-size", "16", "--limit-batches", "2", "--warmup-epochs", "0",
            "--threads", "1", "--no-progress"]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_prune_at_init_records_every_method_and_density_and_resumes(fake_data, tmp_path, monkeypatch) -> None:
    argv = [*fake_data, "--methods", "px,snip,random", "--densities", "0.1,0.02", "--rounds", "2", "--probe-batch-size", "8",
            "--out", str(tmp_path / "pai.json")]
    assert prune_at_init_cifar.main(argv) == 0
    runs = records(tmp_path / "pai.runs.jsonl")
    assert sorted((r["method"], r["density"]) for r in runs) == sorted([("dense", 1.0)] + [(m, d) for m in ("px", "snip", "random") for d in (0.1, 0.02)])
    for r in runs:
        assert r["overall_density"] == pytest.approx(r["density"], abs=1e-4) and len(r["per_layer"]) == 20  # ResNet-20's 19 convs + fc
        assert r["layers"]["min_layer_kept"] >= 1 and 0 <= r["test_acc"] <= 100 and 0 <= r["test_acc_before"] <= 100
        assert r["params"]["after"] <= r["params"]["before"] and r["flops"]["after"] <= r["flops"]["before"]
    result = json.loads((tmp_path / "pai.json").read_text())
    assert result["complete"] and set(result["results"]) == {"dense@1", *(f"{m}@{d:g}" for m in ("px", "snip", "random") for d in (0.1, 0.02))}

    before = (tmp_path / "pai.runs.jsonl").read_text()
    monkeypatch.setattr(prune_at_init_cifar, "fit_and_test", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert prune_at_init_cifar.main(argv) == 0
    assert (tmp_path / "pai.runs.jsonl").read_text() == before
    with pytest.raises(DasError, match="other settings.*epochs"):
        prune_at_init_cifar.main([*argv, "--epochs", "2"])


def test_slim_resnet56_records_each_ratio_before_and_after_and_resumes(fake_data, tmp_path, monkeypatch) -> None:
    """A random ResNet-20 stands in for the ResNet-56 (the script takes any network spec)."""
    save_random_teacher(tmp_path / "net.th", "resnet20")
    argv = [*fake_data, "--network", "resnet20", "--checkpoint", str(tmp_path / "net.th"), "--ratios", "0.3,0.5",
            "--sparse-epochs", "1", "--out", str(tmp_path / "slim.json")]
    assert slim_resnet56.main(argv) == 0
    lines = records(tmp_path / "slim.runs.jsonl")
    assert [r["kind"] for r in lines].count("teacher") == 1 and [r["kind"] for r in lines].count("sparse") == 1
    cuts = {r["ratio"]: r for r in lines if r["kind"] == "slim"}
    assert set(cuts) == {0.3, 0.5} and cuts[0.5]["params"]["after"] < cuts[0.3]["params"]["after"] < cuts[0.3]["params"]["before"]
    assert sorted((r["ratio"], r["variant"]) for r in lines if r["kind"] == "run") == [(0.3, "alone"), (0.3, "distill"), (0.5, "alone"), (0.5, "distill")]
    result = json.loads((tmp_path / "slim.json").read_text())
    assert result["complete"] and set(result["results"]["0.5"]) >= {"params", "flops", "test_acc_before_training", "distill", "alone", "distillation_gain"}

    before = (tmp_path / "slim.runs.jsonl").read_text()
    monkeypatch.setattr(slim_resnet56, "fit_and_test", lambda *a, **k: pytest.fail("finished work was trained again"))
    assert slim_resnet56.main(argv) == 0
    assert (tmp_path / "slim.runs.jsonl").read_text() == before
    with pytest.raises(DasError, match="--ratios"):
        slim_resnet56.main([*argv, "--ratios", "1.5"])
