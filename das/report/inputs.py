"""What a benchmark scores on: its checked input files, its proxy list, probe data and teacher.

Each helper turns one command-line value into what the scoring needs, failing with one
actionable sentence (the option, the bad value, what to give) before any network is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from das.data import load_dataset, probe_batches
from das.errors import DasError
from das.proxies import DEFAULT_TEACHER_INIT, PROXIES, DisWOTReference
from das.proxies.context import Batch


def require_file(path: str | Path, option: str, what: str) -> Path:
    """``path`` as a Path, or a one-line error naming it and the option that gave it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DasError(f"{option} {path} not found (looked at {p.resolve()}); give {what}")
    return p


def resolve_proxies(spec: str, population: bool = False) -> list[str]:
    """A comma-separated proxy list (or ``all``) checked against the registry.

    Args:
        spec: the ``--proxies`` value.
        population: the benchmark reports population-ranked proxies (``ensemble``) from their
            members' scores; otherwise ``all`` leaves them out and naming one is an error.
    """
    per_arch = [n for n in PROXIES.names() if not PROXIES.get(n).needs_reference]
    everything = PROXIES.names() if population else per_arch
    names = everything if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise DasError(f"--proxies {spec!r} names no proxy; give e.g. params,flops,diswot or 'all' (registered: {', '.join(PROXIES.names())})")
    seen = set()
    for n in names:
        PROXIES.get(n)  # unknown names fail here, with close matches
        if n in seen:
            raise DasError(f"--proxies lists {n!r} twice; list each proxy once")
        if n not in everything:
            raise DasError(f"--proxies {n!r} ranks against a population, which this benchmark does not build; give per-architecture proxies ({', '.join(per_arch)})")
        seen.add(n)
    return names


def batches_needed(proxies: Sequence[str]) -> int:
    """The most probe batches any of ``proxies`` needs (ZiCo needs 2, most need 1)."""
    return max([PROXIES.get(n).min_batches for n in proxies] + [1])


def load_probe(npz: str | Path, batch_size: int, num_batches: int, seed: int) -> list[Batch]:
    """``num_batches`` seeded, disjoint, normalised minibatches from one ``.npz`` (x uint8 N×H×W×C, y)."""
    path = require_file(npz, "--data", "an .npz with x (uint8 N×H×W×C) and y, e.g. ../shared/data/cifar10/train_jpeg.npz")
    # das's npz loader wants a train and a test file; the probe only reads the train side.
    splits = load_dataset("npz", train_file=path, test_file=path)
    return probe_batches(splits, batch_size=batch_size, num_batches=num_batches, seed=seed, split="train")


def teacher_reference(spec: str, checkpoint: str | Path, batch: Batch, num_classes: int,
                      init: str = DEFAULT_TEACHER_INIT, seed: int = 0) -> DisWOTReference:
    """The DisWOT reference of a teacher on the first probe batch, computed once.

    ``init``: compare with the trained teacher or with a seeded random re-initialisation of its
    architecture (the DisWOT authors' protocol; the checkpoint is then only checked to exist).
    """
    from teachers import create_teacher

    path = require_file(checkpoint, "--teacher-checkpoint", "a trained teacher's weights, e.g. ../shared/data/teachers/cifar10_resnet56.th")
    teacher = create_teacher(spec, checkpoint=str(path), num_classes=num_classes)
    teacher.requires_grad_(False).eval()
    return DisWOTReference.from_teacher(teacher, batch, init=init, seed=seed)
