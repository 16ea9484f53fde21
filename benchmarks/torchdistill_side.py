"""torchdistill's half of ``torchdistill_compare``, run in torchdistill's own Python, never in das's.

``benchmarks.torchdistill_compare`` starts this module with the interpreter of a virtual
environment that has torchdistill (its docstring shows how to make one) and talks to it in JSON
lines: this side answers ``ready`` once its networks and its ``DistillationBox`` are built, then
one reply per request: ``time`` (images per second of torchdistill's training step on the fixed
batch) and ``train`` (the short schedule, then the student's test accuracy); ``quit`` ends it.
Everything a library prints goes to stderr, so stdout carries the replies only.

What torchdistill runs here is its own machinery, driven from a training config as its sample
configs and its example script drive it: the networks are handed to
``torchdistill.core.distillation.get_distillation_box`` with a config whose criterion is
``WeightedSumLoss`` over one ``KDLoss`` term (its CIFAR-10 KD sample's keys), its optimizer and
scheduler come from the config (``SGD``, ``CosineAnnealingLR`` stepped every iteration), its
data loader from ``train_data_loader`` over a dataset it is given, and a step is the example
script's ``forward_process`` then ``post_forward_process`` (backward, optimizer step, zero grad,
scheduler). The weights are loaded with torchdistill's ``load_ckpt``.

Shared with das's side on purpose, so that only the distillation machinery differs: the network
definitions (das's CIFAR ResNets, the public checkpoint's option-A shortcuts: torchdistill's own
CIFAR ResNets use 1×1-convolution shortcuts and cannot load it; torchdistill trains any
``nn.Module``), the pre-drawn batches and their normalisation (das's ``ImageDataset`` and
``eval_transform``), the test-accuracy count (``das.evaluate.top1_accuracy``) and the timing loop
(``benchmarks.throughput.timed``). So this Python must import das from this checkout:
``torchdistill_compare`` sets ``PYTHONPATH``, and the venv is made with
``--system-site-packages`` so that it sees das's packages and the same torch build.

    python -m benchmarks.torchdistill_side SPEC.json   # started by benchmarks.torchdistill_compare
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO


def kd_criterion(temperature: float, alpha: float) -> dict[str, Any]:
    """torchdistill's criterion config: its ``KDLoss`` (alpha · CE + (1 − alpha) · T² · KL) on both networks' outputs."""
    kd = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".", "teacher_module_io": "output",
          "temperature": temperature, "alpha": alpha, "reduction": "batchmean"}
    return {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}}}


def train_config(spec: dict[str, Any], steps: int | None = None, dataset_id: str | None = None) -> dict[str, Any]:
    """A ``DistillationBox`` training config: the teacher frozen, the student trained, SGD, KD.

    With ``dataset_id``, a sequential loader over that dataset (the batches are pre-drawn in
    order); with ``steps``, the cosine schedule over that many iterations. Built anew for every
    box, since the box edits its config in place.
    """
    import torch

    config: dict[str, Any] = {
        "num_epochs": 1,
        # forward_proc as torchdistill's current samples declare it (1.x has no default)
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False, "frozen_modules": []},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True, "frozen_modules": []},
        "optimizer": {"key": "SGD", "kwargs": dict(spec["optimizer"])},
        "criterion": kd_criterion(spec["temperature"], spec["alpha"]),
    }
    if dataset_id is not None:
        config["train_data_loader"] = {"dataset_id": dataset_id, "sampler": {"class_or_func": torch.utils.data.SequentialSampler, "kwargs": {}},
                                       "kwargs": {"batch_size": spec["batch"], "num_workers": 0, "drop_last": False}}
    if steps is not None:
        config["scheduler"] = {"key": "CosineAnnealingLR", "kwargs": {"T_max": steps}, "scheduling_step": 1}
    return config


def printable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with classes named, for the results file."""
    def name(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: name(v) for k, v in value.items()}
        return f"{value.__module__}.{value.__qualname__}" if isinstance(value, type) else value
    return name(config)


class Side:
    """torchdistill's networks, box and data, built from the spec that torchdistill_compare wrote."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch
        from torchdistill.common.main_util import load_ckpt

        from das.models import build_model

        self.spec, self.torch, self.load_ckpt, self.build_model = spec, torch, load_ckpt, build_model
        self.device = torch.device("cpu")
        batch = torch.load(spec["speed_batch"], weights_only=True)
        self.x, self.y = batch["x"], batch["y"]
        self.speed_box = self.box(train_config(spec))
        self.speed_box.pre_epoch_process(epoch=0)  # the student in train mode, as every epoch starts

    def networks(self):
        """The teacher (public weights, eval mode) and the student (das's initial weights), loaded by torchdistill."""
        teacher = self.build_model(self.spec["teacher"], self.spec["num_classes"])
        student = self.build_model(self.spec["student"], self.spec["num_classes"])
        self.load_ckpt(self.spec["teacher_state"], model=teacher, strict=True)
        self.load_ckpt(self.spec["student_state"], model=student, strict=True)
        # torchdistill's example script leaves the teacher in train mode (its BatchNorm would use
        # batch statistics and move its running ones); das keeps it in eval mode. The same KD needs
        # the same teacher outputs, so it is set to eval here; nothing in torchdistill sets it back.
        return teacher.eval(), student

    def box(self, config: dict[str, Any], datasets: dict[str, Any] | None = None):
        from torchdistill.core.distillation import get_distillation_box

        teacher, student = self.networks()
        return get_distillation_box(teacher, student, datasets or {}, config, self.device, None, False, 1)

    def step(self, x, y) -> None:
        """One training step as torchdistill's example script takes it."""
        loss = self.speed_box.forward_process(x, y, {})
        self.speed_box.post_forward_process(loss=loss)

    def time(self, steps: int, warmup: int) -> dict[str, Any]:
        from benchmarks.throughput import timed

        return {"images_per_s": timed(self.step, self.x, self.y, steps, warmup, self.device)}

    def train(self) -> dict[str, Any]:
        """The short schedule over the pre-drawn batches, then the student's top-1 on the test images."""
        torch = self.torch
        from das.data.splits import ImageDataset, ImageSplit
        from das.data.transforms import eval_transform
        from das.evaluate import top1_accuracy

        data = torch.load(self.spec["schedule"], weights_only=True)
        normalise = eval_transform(data["mean"].tolist(), data["std"].tolist())
        train = ImageDataset(ImageSplit(data["images"], data["labels"]), normalise)
        test = ImageDataset(ImageSplit(data["test_images"], data["test_labels"]), normalise)
        steps = len(train) // self.spec["batch"]
        box = self.box(train_config(self.spec, steps=steps, dataset_id="schedule"), {"schedule": train})
        losses: list[float] = []
        started = time.perf_counter()
        for epoch in range(box.num_epochs):
            box.pre_epoch_process(epoch=epoch)
            for x, y, supp in box.train_data_loader:
                loss = box.forward_process(x.to(self.device), y.to(self.device), supp)
                box.post_forward_process(loss=loss)
                losses.append(loss.item())
            box.post_epoch_process()
        seconds = time.perf_counter() - started
        box.clean_modules()
        loader = torch.utils.data.DataLoader(test, batch_size=self.spec["batch"])
        return {"test_acc": top1_accuracy(box.student_model, loader, self.device), "losses": losses, "seconds": seconds,
                "steps": len(losses), "config": printable(train_config(self.spec, steps=steps, dataset_id="schedule"))}


def serve(side: Side, requests: TextIO, reply) -> None:
    for line in requests:
        request = json.loads(line)
        if request["cmd"] == "time":
            reply(side.time(request["steps"], request["warmup"]))
        elif request["cmd"] == "train":
            reply(side.train())
        elif request["cmd"] == "quit":
            return
        else:
            reply({"error": f"unknown request {request['cmd']!r}"})


def main(argv: Sequence[str]) -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a library prints must not mix with the replies

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        import torch
        import torchdistill
    except ImportError as err:
        reply({"error": f"{sys.executable} cannot import torchdistill ({err})"})
        return 2
    try:
        import das.models  # noqa: F401  (the networks; see the module docstring)
        from das.report.provenance import set_threads
    except ImportError as err:
        reply({"error": f"{sys.executable} imports torchdistill but not das from this checkout ({err}); make its venv with "
                        "--system-site-packages in das's Python so it sees das's packages"})
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    threads = set_threads(spec["threads"])
    side = Side(spec)
    reply({"ready": True, "torch": torch.__version__, "torchdistill": torchdistill.__version__, "threads": threads,
           "python": sys.executable, "config": printable(train_config(spec))})
    serve(side, sys.stdin, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
