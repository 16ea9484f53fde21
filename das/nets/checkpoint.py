"""Load local weights into a model, strictly, with errors that say what does not fit.

A teacher's weights decide what the student is distilled towards; a silently partial load (the
``strict=False`` habit) distils from a half-random network and nobody notices. So loading is
strict, as in timm's ``_helpers.load_state_dict``: das unwraps the usual containers
(``{"state_dict": ...}`` from Lightning and most training scripts, ``{"model": ...}``,
EMA copies), strips wrapper prefixes (``module.`` from DataParallel/DDP, ``_orig_mod.`` from
``torch.compile``, ``model.``/``student.`` from Lightning modules), and if the keys or shapes
still disagree it says which. Files are read with ``weights_only=True``: a checkpoint is data,
never code to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from das.errors import DasError

# Containers tried in this order. EMA weights first, as timm does: when a file has both, the
# EMA copy is the one that was evaluated and usually the better teacher.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.", "model.", "student.")
# How many key names an error message lists before it only counts the rest.
SHOWN = 5


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` strictly and return ``model``.

    Raises:
        DasError: the file is missing or unreadable, holds no state dict, or its keys or
            tensor shapes do not match ``model``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DasError(f"checkpoint {str(path)!r} does not exist; pass the path of a local weights file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and allow-list errors all mean "cannot use this file"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DasError(
            f"cannot read checkpoint {str(path)!r} with torch.load(weights_only=True) ({first}); "
            "re-save it as torch.save(model.state_dict(), path)"
        ) from None
    state = extract_state_dict(raw, path)
    state = strip_prefixes(state, model.state_dict().keys())
    check_fits(model, state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # what check_fits cannot see, e.g. a module's own load hook refusing
        raise DasError(f"checkpoint {str(path)!r} does not load into {type(model).__name__}: {' '.join(str(e).split())}") from None
    return model


def extract_state_dict(raw: object, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapping nested ``state_dict``/``model``/EMA containers."""
    while isinstance(raw, Mapping):
        inner = next((raw[k] for k in WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, Mapping) or not raw:
        raise DasError(f"checkpoint {str(path)!r} holds no state dict (got {type(raw).__name__}); save model.state_dict()")
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise DasError(
            f"checkpoint {str(path)!r} is not a state dict: {_listing(bad)} are not tensors "
            f"and none of {', '.join(WRAPPER_KEYS)} holds one"
        )
    return {str(k): v for k, v in raw.items()}


def strip_prefixes(state: dict[str, torch.Tensor], model_keys: object = ()) -> dict[str, torch.Tensor]:
    """Strip, repeatedly, any of :data:`PREFIXES` that every key shares.

    A prefix is kept when the model's own keys all start with it too (a model whose only child
    is called ``model``), so stripping never breaks a checkpoint that already fits.
    """
    model_keys = list(model_keys)  # type: ignore[call-overload]
    while True:
        prefix = next(
            (p for p in PREFIXES
             if all(k.startswith(p) for k in state)
             and not (model_keys and all(k.startswith(p) for k in model_keys))),
            None,
        )
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    """Raise one DasError listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    # BatchNorm's counter of batches seen is absent from checkpoints older than PyTorch 0.4.1;
    # torch itself fills it in on load (it does not affect inference), so it is not "missing".
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing keys {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_listing(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches (checkpoint vs model) {_listing(shapes)}")
    raise DasError(
        f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {'; '.join(parts)}; "
        "check that the teacher spec and num_classes are those the checkpoint was trained with"
    )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    more = len(items) - SHOWN
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"
