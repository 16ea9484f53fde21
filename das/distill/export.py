"""Export a trained student to ONNX and check that the file computes what the eager student does.

Why ONNX: it is the format deployment runtimes read (onnxruntime, TensorRT, OpenVINO), and
TorchScript is on its way out (torch 2.14 marks ``torch.jit.save``/``load`` deprecated in favour
of ``torch.export``, which the dynamo ONNX exporter used here is built on).

What is checked: the written file, loaded by onnxruntime on CPU, against the eager student (a
copy in eval mode, on CPU, in float32) on the example batch and on batches of 1 and of 3 more
images, since the batch dimension is exported dynamic. The largest absolute difference must be
at most ``TOLERANCE`` × max(1, largest |eager output|): 1e-5 absolute for outputs within ±1,
relative above. A float32 kernel is not bit-exact across libraries: a random-init ResNet-20,
whose logits reach 27, differs by 1.5e-5 (8 float32 steps at that size) with a correct export.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from das.errors import DasError

TOLERANCE = 1e-5
INPUT_NAME = "input"


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduced the eager outputs."""

    path: Path
    max_abs_diff: float
    bound: float  # the largest difference allowed (TOLERANCE scaled by the outputs' size)
    batch_sizes: tuple[int, ...]


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> ExportCheck:
    """Write ``model`` to ``path`` as ONNX with a dynamic batch dimension, then check it with onnxruntime.

    ``model`` itself is left as it was (mode, device, dtype, ``requires_grad``): a CPU float32
    copy is exported. On a failed check (or a failed export) no file is left at ``path``.

    Raises:
        DasError: the exporter cannot trace ``model`` (say, Python branches on tensor values), or
            the exported file's outputs differ from the eager ones by more than the bound.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # Contiguous weights: the exported graph should not depend on the layout the student trained in.
        net = copy.deepcopy(model).to("cpu", torch.float32).to(memory_format=torch.contiguous_format).eval().requires_grad_(False)
        example = example.detach().to("cpu", torch.float32)
        # One self-contained file (external_data=False): the default writes the weights to a
        # sidecar ``.data`` file that the tmp-then-rename below would orphan.
        try:
            with _quiet():
                torch.onnx.export(
                    net, (example,), tmp, dynamo=True, external_data=False, input_names=[INPUT_NAME], verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
        except Exception as err:
            raise DasError(f"torch.onnx.export cannot export the student: {_root_cause(err)}") from err
        check = _check(net, example, tmp)
        if check.max_abs_diff > check.bound:
            raise DasError(
                f"the ONNX export differs from the eager student by {check.max_abs_diff:.3g} (more than {check.bound:.3g}) "
                f"on batches of {', '.join(map(str, check.batch_sizes))}, so {path.name} was not written"
            )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)  # never leave an earlier run's file beside this run's student.pt
        raise
    return ExportCheck(path, check.max_abs_diff, check.bound, check.batch_sizes)


def _check(net: nn.Module, example: torch.Tensor, onnx_file: Path) -> ExportCheck:
    import onnxruntime as ort  # here, not at the top: train.py --help need not load it

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    n = example.shape[0]
    g = torch.Generator().manual_seed(0)
    batches = [example] + [torch.randn(k, *example.shape[1:], generator=g) * example.std() + example.mean() for k in (1, n + 3)]
    worst, scale = 0.0, 1.0
    for x in batches:
        with torch.no_grad():
            eager = _outputs(net(x))
        exported = session.run(None, {INPUT_NAME: x.numpy()})
        if len(exported) != len(eager):
            raise DasError(f"the ONNX export gives {len(exported)} outputs where the eager student gives {len(eager)}")
        for e, o in zip(eager, exported):
            if tuple(o.shape) != tuple(e.shape):
                raise DasError(f"the ONNX export gives an output of shape {tuple(o.shape)} where the eager student gives {tuple(e.shape)}")
            worst = max(worst, float(np.abs(o.astype(np.float64) - e.double().numpy()).max(initial=0.0)))
            scale = max(scale, float(e.abs().max()) if e.numel() else 0.0)
    return ExportCheck(onnx_file, worst, TOLERANCE * scale, tuple(len(x) for x in batches))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter: on a failure torch.export prints the partial graph to stderr (tens of lines)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _root_cause(err: BaseException) -> str:
    """The innermost exception as ``Type: first line`` (the outer ones are the exporter's advice)."""
    while err.__cause__ is not None:
        err = err.__cause__
    line = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().split("\n")[0]
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _outputs(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)
