"""student.onnx: the exported file computes what the eager student does, and a bad export leaves nothing."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from das.distill.export import export_onnx
from das.errors import DasError
from das.models import build_model
from das.spec import ArchSpec

# A tiny NAS-Bench-201 cell with every kind of op a searched student has: conv, pool, skip, none.
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|none~2|"
SHAPE = (3, 8, 8)


def tiny_student() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ArchSpec.make("nb201", {"arch": ARCH}, {"C": 4, "N": 1}), 10)


def example(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def state(model: nn.Module) -> dict[str, object]:
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "devices": {t.device for t in model.state_dict().values()},
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the tests that only read it (an export takes seconds on a CPU)."""
    model = tiny_student().train()
    model.cells[0].requires_grad_(False)  # a partly frozen student: the flags must survive as they were
    before = state(model)
    path = tmp_path_factory.mktemp("export") / "student.onnx"
    return model, before, export_onnx(model, example(), path)


def test_the_onnx_file_gives_the_eager_outputs_on_two_batch_sizes(exported) -> None:
    model, _, check = exported
    assert check.path.is_file() and check.max_abs_diff <= 1e-5
    session = onnxruntime.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    model.eval()
    try:
        for n in (2, 7):  # the example's batch size and another: the batch dimension is dynamic
            x = example(n, seed=n)
            with torch.no_grad():
                eager = model(x).numpy()
            (onnx_out,) = session.run(None, {name: x.numpy()})
            assert onnx_out.shape == eager.shape and np.abs(onnx_out - eager).max() <= 1e-5
    finally:
        model.train()


def test_export_leaves_the_eager_model_as_it_was(exported) -> None:
    model, before, _ = exported
    after = state(model)
    assert after["training"] == before["training"] and all(before["training"].values())
    assert after["requires_grad"] == before["requires_grad"] and not all(before["requires_grad"].values())
    assert after["devices"] == before["devices"] == {torch.device("cpu")}
    for key, value in before["weights"].items():
        assert torch.equal(after["weights"][key], value), key


def test_outputs_that_differ_raise_and_leave_no_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "student.onnx"
    path.write_bytes(b"an earlier run's export")  # must not survive beside a new student.pt
    run = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: [o + 1e-3 for o in run(self, *a, **k)])
    with pytest.raises(DasError, match=r"differs from the eager student by 0\.001"):
        export_onnx(tiny_student(), example(), path)
    assert list(tmp_path.iterdir()) == []


class Branchy(nn.Module):
    """A Python branch on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y if y.sum() > 0 else -y


def test_a_network_the_exporter_cannot_trace_is_one_line_and_no_file(tmp_path, capfd) -> None:
    with pytest.raises(DasError, match="cannot export the student: GuardOnDataDependentSymNode") as err:
        export_onnx(Branchy(), example(), tmp_path / "student.onnx")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == ""  # torch.export's partial graph dump is silenced


def test_train_py_keeps_student_pt_when_the_export_fails(tmp_path, capsys) -> None:
    """An exotic student costs its student.onnx only: one warning line, student.pt and student.json written."""
    from das.distill import DistillModule
    from das.distill.command import save_student

    module = DistillModule(student="tests.tinynets:TinyNet", input_size=SHAPE)
    module.student = Branchy()
    assert save_student(module, tmp_path / "student.pt", example(), test_acc=50.0) == [tmp_path / "student.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.json", "student.pt"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {tmp_path / 'student.onnx'} not written (torch.onnx.export cannot export the student")
    info = json.loads((tmp_path / "student.json").read_text())
    assert info["onnx_max_abs_diff"] is None and "GuardOnDataDependentSymNode" in info["onnx_error"]
