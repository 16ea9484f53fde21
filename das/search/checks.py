"""Checks before any work: every setting a user can get wrong fails here in one line.

The search runs them before its first long step (teacher training, the ensemble's reference
population, the trials), so a typo costs seconds, not an hour.
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from das.errors import DasError, close_matches_hint
from das.proxies import PROXIES
from das.search.config import BudgetConfig, SpaceConfig, StudyConfig
from das.search.reference import random_members
from das.spaces import SPACES, SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params, meta_params


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DasError(f"device={device!r} but no CUDA device is available; use device=cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DasError(f"device={device!r} is not a torch device; use auto, cpu or cuda[:N]") from None


def check_workers(workers: int, first_worker: int = 0) -> None:
    """Refuse a worker count or first worker index that is not a number of processes."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DasError(f"workers={workers!r} must be a positive integer: the number of processes that score trials "
                       "on this machine (1 scores in this process)")
    if isinstance(first_worker, bool) or not isinstance(first_worker, int) or first_worker < 0:
        raise DasError(f"first_worker={first_worker!r} must be an integer >= 0: this command's first worker index "
                       "(sampler seed study.seed + index); give each machine's command its own range")


def check_study(study: StudyConfig, proxies: list[str]) -> bool:
    """Refuse impossible study settings; return whether a proxy needs the ensemble's reference."""
    if isinstance(study.trials, bool) or not isinstance(study.trials, int) or study.trials < 1:
        raise DasError(f"study.trials={study.trials!r} must be a positive integer: the study's total trials (rerunning resumes up to it)")
    for name in proxies:
        PROXIES.get(name)
    needed = max(PROXIES.get(name).min_batches for name in proxies)
    if study.probe_batches < needed:
        hungry = [n for n in proxies if PROXIES.get(n).min_batches > study.probe_batches]
        raise DasError(f"study.probe_batches={study.probe_batches} but {hungry} need {needed}; set --study.probe_batches {needed}")
    needs_reference = any(PROXIES.get(name).needs_reference for name in proxies)
    if needs_reference and study.reference_size < 2:
        raise DasError(f"study.reference_size={study.reference_size}; the ensemble's reference needs at least 2 architectures (100 is a good size)")
    return needs_reference


def make_space(cfg: SpaceConfig) -> tuple[SearchSpace, dict[str, Any]]:
    """The search space and its full arguments (``space.args`` over the space's own defaults).

    Unknown argument names are refused with the accepted ones; the full arguments are what the
    run directory remembers, so ``{C: 16}`` and ``{C: 16, N: 5}`` count as the same space. They
    are the built space's own ``space_args`` (what its specs record), not the signature's
    defaults: a default of None that the space resolves (timm's ``model``) is stored resolved,
    so naming it explicitly (``model: resnet18``) is the same space.
    """
    cls = SPACES.get(cfg.name)
    args = dict(cfg.args or {})
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        for key in args:
            if key not in named:
                hint = close_matches_hint(str(key), named)
                hint = f"{hint} " if hint.startswith("did you mean") else ""
                raise DasError(f"space.args has unknown key {key!r} for space {cfg.name!r}: {hint}accepted keys: {', '.join(named) or 'none'}")
    built = cls(**args)
    return built, json.loads(json.dumps(dict(built.space_args)))  # lists, not tuples: the form the storage gives back


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".das-write-test-"):
            pass
    except OSError as err:
        raise DasError(f"run_dir={str(run_dir)!r} is not writable ({err.strerror or err}); choose another --run_dir") from None


def _runs(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """None if ``model`` runs on ``x``, else why not."""
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError) as err:
        return " ".join(str(err).split())[:120]
    return None


def check_space_runs(space: SearchSpace, name: str, args: dict[str, Any], num_classes: int, sample: torch.Tensor, image_size: int | None) -> None:
    """Refuse images too small for the space's networks (say the smallest side that works)."""
    spec = space.smallest() if hasattr(space, "smallest") else random_members(space, 0)()
    model = spec.build(num_classes).eval()  # eval: BatchNorm of a 1×1 map on 2 images is not the question
    why = _runs(model, sample)
    if why is None:
        return
    c, h, w = sample.shape[1:]
    least = next((s for s in range(max(h, w) + 1, 257) if _runs(model, sample.new_zeros(2, c, s, s)) is None), None)
    need = f"they need at least {least}×{least}" if least else "no size up to 256 works"
    raise DasError(
        f"data.image_size={image_size} gives {h}×{w} images, too small for {name} students with {args} ({why}); "
        f"{need}: raise data.image_size (null keeps the dataset's own size)"
    )


def check_budget_values(budget: BudgetConfig) -> None:
    """Refuse a budget that is not a limit: each one is positive, or null for none."""
    for key in ("max_params", "max_flops"):
        value = getattr(budget, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DasError(f"budget.{key}={value!r} must be a positive integer, or null for no limit")
    value = budget.max_latency_ms
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if value is not None and not ok:
        raise DasError(f"budget.max_latency_ms={value!r} must be a positive number of milliseconds (one forward pass at "
                       "study.probe_batch_size on the search device), or null for no limit")


#: Members drawn to check a budget against a space that cannot name its smallest member.
BUDGET_DRAWS = 32


def check_budget_reachable(space, name: str, budget: BudgetConfig, num_classes: int, input_shape: tuple[int, ...], seed: int = 0) -> None:
    """Fail before any work when no candidate can be within the params/FLOPs budget.

    ``space.smallest()`` is the member with the fewest parameters (for nb201, a cell of skips
    and no convolutions, the fewest FLOPs too). A space without one (a user's define-by-run
    function) has :data:`BUDGET_DRAWS` random members sized on the meta device instead: if
    none is within the budget, it is refused; if a few are, the search stops once it has found
    them all (see :mod:`das.search.trial_objective`).
    """
    if budget.max_params is None and budget.max_flops is None:
        return
    shape = "×".join(map(str, input_shape))
    if hasattr(space, "smallest"):
        smallest: ArchSpec = space.smallest()
        model = smallest.build(num_classes)
        params = count_params(model)
        if budget.max_params is not None and params > budget.max_params:
            raise DasError(f"budget.max_params={budget.max_params} is below the smallest candidate of {name} ({smallest}: {params} params); raise the budget")
        if budget.max_flops is not None:
            flops = count_flops(model, input_shape)
            if flops > budget.max_flops:
                raise DasError(f"budget.max_flops={budget.max_flops} is below the smallest candidate of {name} ({smallest}: {flops} FLOPs on {shape} images); raise the budget")
        return
    draw = random_members(space, seed)
    sizes = []
    for _ in range(BUDGET_DRAWS):
        spec = draw()
        params = meta_params(lambda: spec.build(num_classes))
        if params is not None and budget.max_params is not None and params > budget.max_params:
            sizes.append((params, None))
            continue
        with torch.device("meta"):
            model = spec.build(num_classes)
        flops = count_flops(model, input_shape)
        params = count_params(model)
        if (budget.max_params is None or params <= budget.max_params) and (budget.max_flops is None or flops <= budget.max_flops):
            return
        sizes.append((params, flops))
    least_params = min(p for p, _ in sizes)
    least_flops = min((f for _, f in sizes if f is not None), default=None)
    least = f"the smallest has {least_params} params" + (f" and {least_flops} FLOPs on {shape} images" if least_flops is not None else "")
    raise DasError(f"{budget_text(budget, ('max_params', 'max_flops'))} is below every one of {BUDGET_DRAWS} random members of {name} ({least}); raise the budget")


def budget_text(budget: BudgetConfig, keys: tuple[str, ...] = ("max_params", "max_flops", "max_latency_ms")) -> str:
    return ", ".join(f"budget.{k}={getattr(budget, k)}" for k in keys if getattr(budget, k) is not None)
