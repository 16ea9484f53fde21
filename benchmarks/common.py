"""What the benchmark scripts share: results files, provenance and timing, and the inputs several read.

Results files come in two shapes, both from das: a summary JSON written atomically
(:func:`write_json`, standard JSON: NaN becomes null) and a resumable JSON-lines file of finished
runs (:class:`ResultsFile`: a settings line, then one record per line, flushed at once; a rerun
skips what is recorded and a file written with other settings is refused). Every summary records
the machine, the code and the date (:func:`machine_info`, :func:`code_version`, :func:`now_iso`).

A helper lives here when two or more scripts use it; a helper of one script stays in that
script. Run a benchmark from the repository root as ``python -m benchmarks.NAME``, so that
``das`` is the checkout's own and not an installed copy.
"""

from __future__ import annotations

import csv
import json
import os
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from scipy.stats import spearmanr
from torch import nn

from das.calibrate.results import ResultsFile, flatten
from das.data.splits import stratified_split
from das.errors import DasError
from das.features import feature_points
from das.proxies import ENSEMBLE_MEMBERS, TEACHER_INITS, DisWOTReference
from das.proxies.context import capture, seeded
from das.proxies.diswot import relation_distance, semantic_distance
from das.proxies.state import preserved
from das.report.inputs import require_file, teacher_reference
from das.report.output import fmt, json_safe, print_table, write_json
from das.report.provenance import code_version, machine_info, now_iso, set_threads

__all__ = [
    "ACCURACY_COLUMNS", "DISWOT_VARIANTS", "LOGIT_TERMS", "FitTimer", "ResultsFile", "code_version", "diswot_teacher_references",
    "diswot_variant_scores", "flatten", "fmt", "json_safe", "load_average", "machine_info", "now_iso", "parse_list", "print_table",
    "read_accuracy_csv", "read_results", "rho", "runs_file", "sample_rows", "scored_proxies", "set_threads", "spread", "spread_order",
    "subset_file", "write_json",
]


# --------------------------------------------------------------------------- results files


def runs_file(out: Path, settings: dict[str, Any]) -> ResultsFile:
    """``OUT.runs.jsonl`` beside the summary ``OUT.json``: one record per finished run, resumable.

    The settings are what make two runs comparable (data, schedule, networks); a file written
    with other settings is refused, naming the keys that differ.
    """
    return ResultsFile(out.with_name(out.name.removesuffix(".json") + ".runs.jsonl"), settings)


def read_results(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A results file's settings and records, read only: safe while another process appends to it.

    A missing file gives ``(None, [])``; a line cut short by a kill (or still being written) is skipped.
    """
    if not path.is_file():
        return None, []
    settings, records = None, []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if i == 0:
            settings = obj.get("settings")
        else:
            records.append(obj)
    return settings, records


# --------------------------------------------------------------------------- provenance and timing


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (rounded), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class FitTimer(Callback):
    """Seconds of the fit alone (validation passes included, the final test not) and the last val accuracy."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started, self.val_acc = time.perf_counter(), None

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.started
        val = trainer.callback_metrics.get("val/acc")
        self.val_acc = None if val is None else 100.0 * float(val)


# --------------------------------------------------------------------------- command lines and statistics


def parse_list(text: str, what: str, cast: Callable[[str], Any] = str) -> list:
    """``--what a,b,c`` as a list of ``cast`` values: at least one, each once."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [cast(t) for t in items]
    except ValueError:
        raise DasError(f"--{what} {text!r} must be a comma-separated list of {cast.__name__}s") from None
    if not values or len(set(values)) != len(values):
        raise DasError(f"--{what} {text!r} must name at least one item, each once")
    return values


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None where undefined), with the values."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def rho(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ (None below 3 pairs, where it says nothing, or when a side is constant)."""
    if len(a) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column (every student at chance) has no ρ: None below
        value = float(spearmanr(a, b).statistic)
    return value if math.isfinite(value) else None


def spread_order(n: int) -> list[int]:
    """0..n-1 ordered to cover the range early: the middle, then the middles of the two halves, and so on."""
    order, queue = [], [(0, n - 1)]
    while queue:
        lo, hi = queue.pop(0)
        if lo <= hi:
            mid = (lo + hi) // 2
            order.append(mid)
            queue += [(lo, mid - 1), (mid + 1, hi)]
    return order


# --------------------------------------------------------------------------- CIFAR-10 training inputs

# The logit terms of the distillation tables: a convex mix (weights summing to 1, Hinton et al.'s
# weighted average) so that adding KD does not double the step size: with ce 1 + kd 1 the distilled
# runs took twice the alone run's steps and lost the first epochs to it (cifar10_distill's history).
LOGIT_TERMS = {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}}


def subset_file(source: Path, images: int, seed: int, work: Path) -> Path:
    """A seeded, stratified subset of ``source`` as an npz in ``work`` (written once, reused)."""
    path = work / f"{source.stem}_{images}_seed{seed}.npz"
    if path.is_file():
        return path
    with np.load(source, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    if not 0 < images <= len(y):
        raise DasError(f"--train-images + --val-images = {images} must be between 1 and the {len(y)} images of {source}")
    _, picked = stratified_split(torch.from_numpy(y.astype(np.int64)), images / len(y), seed)
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, x=x[picked.numpy()], y=y[picked.numpy()])
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- the NAS-Bench-201 table

ACCURACY_COLUMNS: tuple[str, ...] = ("cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc")


def read_accuracy_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an NB201 accuracy table: ``key`` (its index), ``arch`` and the accuracy columns as floats."""
    p = require_file(path, "--accuracy-csv", f"a CSV with columns index, arch, {', '.join(ACCURACY_COLUMNS)} (e.g. ../shared/data/nb201/nb201_accuracy.csv)")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("index", "arch", *ACCURACY_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise DasError(f"{p} lacks columns {missing} (has {reader.fieldnames}); it needs index, arch, {', '.join(ACCURACY_COLUMNS)}")
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                accs = {c: float(r[c]) for c in ACCURACY_COLUMNS}
            except (TypeError, ValueError):
                raise DasError(f"{p} line {line}: accuracies {[r[c] for c in ACCURACY_COLUMNS]} are not all numbers") from None
            rows.append({"key": str(r["index"]), "arch": r["arch"], **accs})
    if not rows:
        raise DasError(f"{p} has no rows; it needs at least two architectures to rank")
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        raise DasError(f"{p} repeats values of its index column; each architecture needs its own index")
    return rows


def sample_rows(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a seeded permutation: a larger ``n`` extends a smaller one's sample."""
    if n < 0 or n > len(rows):
        raise DasError(f"--num-archs {n} but the CSV has {len(rows)} rows; give 1..{len(rows)} (or 0 for all)")
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[: n or len(rows)]]


def scored_proxies(proxies: Sequence[str]) -> list[str]:
    """What is scored per architecture: the listed proxies, with ``ensemble`` replaced by its members."""
    out = [n for n in proxies if n != "ensemble"]
    if "ensemble" in proxies:
        out += [m for m in ENSEMBLE_MEMBERS if m not in out]
    return out


# --------------------------------------------------------------------------- DisWOT's protocol variants

DISWOT_BN_MODES = ("train", "eval")
DISWOT_TERMS = ("diswot", "diswot_relation", "diswot_semantic")


def diswot_column(init: str, bn: str, term: str) -> str:
    return f"{term}@teacher_{init}/bn_{bn}"


#: Every (teacher, BN mode, term) column, the ones a DisWOT variant scores (diswot_variants, ground_truth_proxies).
DISWOT_VARIANTS = [diswot_column(i, b, t) for i in TEACHER_INITS for b in DISWOT_BN_MODES for t in DISWOT_TERMS]


def diswot_student_capture(student: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], bn: str, seed: int):
    """The student's final map, classifier input and logits at initialisation, BN in ``bn`` mode."""
    x, _ = batch
    with preserved(student):
        student.train()
        if bn == "eval":
            for m in student.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        with seeded(seed, x.device):
            return capture(student, x, feature_points(student, x))


def diswot_teacher_references(spec: str, checkpoint: str | Path, batch, num_classes: int, seed: int) -> dict[str, DisWOTReference]:
    """The teacher read once per init (random, trained) on the probe batch: every variant compares with one of them."""
    return {init: teacher_reference(spec, checkpoint, batch, num_classes, init, seed) for init in TEACHER_INITS}


def diswot_variant_scores(student: nn.Module, batch, references: dict[str, DisWOTReference], seed: int) -> dict[str, float]:
    """Every (teacher, BN mode, term) value of one student: one forward per BN mode."""
    out: dict[str, float] = {}
    for bn in DISWOT_BN_MODES:
        own = DisWOTReference.from_capture(diswot_student_capture(student, batch, bn, seed), batch[1])
        for init, ref in references.items():
            relation = relation_distance(ref.relation, own.relation)
            semantic = semantic_distance(ref.weight_grad, own.weight_grad)
            out[diswot_column(init, bn, "diswot_relation")] = -relation
            out[diswot_column(init, bn, "diswot_semantic")] = -semantic
            out[diswot_column(init, bn, "diswot")] = -(relation + semantic)
    return out
