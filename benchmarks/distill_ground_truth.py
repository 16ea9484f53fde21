"""Distillation ground truth: a population of students trained distilled and alone on CIFAR-10.

Section 2 of the issue "Distillation ground truth". Whether a proxy picks students that *distil*
well can only be judged against students actually distilled. This script samples a population of
one search space (``--population nb201`` or ``resnet_cifar``, one per invocation), trains each
student twice from the same initial weights with das's population trainer
(:func:`das.calibrate.train_population`): distilled from the public CIFAR-10 ResNet-56 and alone,
and writes per student its spec, parameters, FLOPs, both test accuracies and the gain.

**Sampling** (``--students`` K, ``--sample-seed``): every member of the space (or a seeded pool of
``--candidates`` of them), one per isomorphism class (``space.canonical``: NB201's 15,625 cells are
6,466 classes; resnet_cifar's 8,000 networks are all distinct), minus the students that are
zero-accuracy by construction: an NB201 cell with no path of non-``none`` edges from the input node
to the output node computes a constant (5 of the 6,466 classes); every resnet_cifar member trains.
Parameters are counted by building each candidate on the CPU (4-6 ms each, once: 26 s for NB201,
89 s for resnet_cifar on the loaded 2-core machine; the meta device measured slower). The
log-parameter range is cut into K **equal-width** bins and one student is drawn per bin. Equal width, not quantiles,
because the questions asked of the population are about size: ranking across sizes and picks
within parameter budgets need students at every size, while both spaces pile their members up in
the middle of the range (NB201's conv counts are binomial, resnet_cifar is a product grid), where
quantile bins would put most students and leave the small and large budgets nearly empty. A bin
may hold no member (NB201's parameter count depends only on how many edges are 1×1 and 3×3
convolutions: 28 distinct counts, 23 of 32 bins filled at C=8, N=1); the students of empty bins
go, one per bin per round, to the bins with the most members left (ties: the smaller bin).
The sample, sorted by parameters, is written to ``OUT.students.json`` with its settings and reused
on every rerun, so a rerun trains the same students.

**Protocol** (sized for the 2-core CPU machine; all of it is in the results files' settings):
CIFAR-10 from ``shared/data/cifar10``: a seeded stratified ``--train-images`` subset of
``train_jpeg.npz`` and the whole ``test_jpeg.npz`` (``--test-images`` subsamples it, for smoke
tests only); teacher ``resnet56`` with ``teachers/cifar10_resnet56.th``, its test accuracy in the
summary. NB201 students are built at ``{C: 8, N: 1}`` by default: the benchmark's C=16, N=5 cells
took 1.3-2.5 s per batch of 128 on 2 cores (1×1 convolutions are slow on the CPU), out of reach for
hundreds of student-epochs. resnet_cifar keeps its full space. The ground truth runs at
16×16 (``--image-size 16``, a quarter of the 32×32 cost; NAS-Bench-201's ImageNet16-120 is 16×16)
with the ResNet-56 fine-tuned at that size by ``benchmarks/finetune_teacher.py``
(it writes ``benchmarks/results/teachers/cifar10_resnet56_16px.pt``, not committed; run it first; its accuracy at both sizes in the JSON
beside it). The public checkpoint is trained at 32×32 and scores far lower on 16×16 inputs, so
another ``--image-size`` than 32 is refused unless a ``--teacher-checkpoint`` trained at that
size is given.

**Recipe**: train.py's (the scale by the rule of ``benchmarks/cosine_scale_rule.py``):
``--epochs`` 10 at ``--batch-size`` 128, SGD + Nesterov, peak ``--lr`` 0.05 after
``--warmup-epochs`` 1, cosine to 0, weight decay 5e-4; distilled objective ½ CE + ½ KD (T = 4) +
the cosine loss on every stage pair (scale 1, averaged over the pairs: DistillModule's
``DEFAULT_LOSSES`` and ``DEFAULT_FEATURE_PAIRS``); the run alone trains on CE. As in that
table's data module, the training images are augmented (random crop + flip), here as ``--views``
fixed augmented views per image whose teacher outputs are cached once (the population trainer's
teacher cache); an epoch shows every image once in one of its views.

**Soundness studies**: ``--seeds 0,1`` reruns ``--noise-students`` of the sample with seed 1 (the
seed of each student's initial weights, batch order and views); ``--fidelity-students N`` reruns N
students with ``--long-factor``× the epochs. Both subsets are evenly spaced over the
parameter-sorted sample (the first N would be the N smallest). ``--fidelity-first`` trains the
fidelity subset at both lengths before anything else, so a new protocol that fails the check
costs a quarter of a population, not all of it. ``--stages`` runs only the named stages, so
two single-thread processes can share the two cores: one the long fidelity runs, the other the
ground truth and noise runs (a last run without ``--stages`` writes the whole summary). A
results file refuses other settings, so each (seed, epochs) has its own file beside ``OUT``:

    OUT.jsonl              every student, first seed, --epochs (the ground truth)
    OUT.seed<S>.jsonl      the noise subset at seed S, --epochs
    OUT.epochs<E>.jsonl    the fidelity subset, first seed, E = --epochs × --long-factor epochs
    OUT.short<E>.jsonl     with --short-epochs E: every student distilled only for E epochs, first seed, tested
                           on --val-images validation images from the training file (never the test set):
                           the short run a user would see, replayed against the ground truth
    OUT.students.json      the sample and how it was drawn
    OUT.json               the summary: per student spec, params, FLOPs, distilled, alone, gain;
                           the teacher's accuracy; Spearman ρ between seeds (distilled acc, gain)
                           and the per-student std of the gain; ρ of distilled acc short vs long;
                           seconds, machine, load and code

(``OUT`` is ``--out`` without ``.json``.) Each finished student is appended at once; rerunning the
same command skips finished students, and Ctrl-C keeps everything written. Students train in an
order that covers the parameter range early (middle first, then halving the gaps), so a partial
file is a coarse population rather than only its small end. The expected time is printed before
the bulk of the work, from the measured speed of finished students: on a fresh start the first
(middle-sized) student is trained alone first to measure it, which builds the teacher cache once
more (3-5 min on the loaded 2-core machine); the sample's mean FLOPs are ~1.1× its middle student's.

    python -m benchmarks.finetune_teacher --image-size 16 --epochs 10
    python -m benchmarks.distill_ground_truth --population nb201 --image-size 16 --seeds 0,1 --fidelity-students 8 \
        --teacher-checkpoint benchmarks/results/teachers/cifar10_resnet56_16px.pt --threads 2
    python -m benchmarks.distill_ground_truth --population resnet_cifar --image-size 16 --seeds 0,1 \
        --teacher-checkpoint benchmarks/results/teachers/cifar10_resnet56_16px.pt --threads 2
    python -m benchmarks.distill_ground_truth --population mobilenetv3 --image-size 16 --seeds 0,1 \
        --fidelity-students 12 --fidelity-first \
        --teacher-checkpoint benchmarks/results/teachers/cifar10_resnet56_16px.pt --threads 2
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.common import (code_version, flatten, fmt, machine_info, now_iso, print_table, read_results, rho, set_threads, spread_order,
                               write_json)
from das.calibrate import PopulationData, Recipe, train_population
from das.calibrate.trainer import evaluate, weights_digest
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.data.splits import stratified_split
from das.distill.module import DEFAULT_FEATURE_PAIRS, DEFAULT_LOSSES as MODULE_DEFAULT_LOSSES
from das.distill.optim import OptimConfig
from das.errors import DasError
from das.models import build_model
from das.paths import shared_data_dir
from das.spaces import SPACES, create_space
from das.spaces.base import SearchSpace
from das.spaces.nb201 import EDGES, parse_arch
from das.spec import ArchSpec
from das.stats import count_params

BENCHMARK = "distill_ground_truth"

#: Each population's space arguments: NB201 shrunk for the CPU (see the module docstring), resnet_cifar whole,
#: and T, the confirmation population (timm's MobileNetV3-Small family: inverted residuals, depthwise
#: convolutions, squeeze-excitation, hard-swish; width and depth both vary). T's choice lists were fixed
#: before any of its students trained: 8 channel × 7 depth multipliers, 40 distinct networks after timm's
#: rounding merges some depths (217 k - 3.3 M params at 10 classes).
SPACE_ARGS: dict[str, dict[str, Any]] = {
    "nb201": {"C": 8, "N": 1},
    "resnet_cifar": {},
    "mobilenetv3": {"family": "mobilenetv3", "channel_multipliers": [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125],
                    "depth_multipliers": [0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5]},
}

#: The registered space each population samples (a population is a space with fixed arguments).
SPACE_OF: dict[str, str] = {"nb201": "nb201", "resnet_cifar": "resnet_cifar", "mobilenetv3": "timm"}

#: train.py's recipe (DistillModule's default, settled by benchmarks/cifar10_distill.py): the ground truth measures what a user gets.
DEFAULT_LOSSES = copy.deepcopy(MODULE_DEFAULT_LOSSES)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--population", required=True, choices=sorted(SPACE_ARGS), help="the search space the students come from")
    p.add_argument("--space-args", default=None, help="the space's arguments as YAML/JSON (default: {C: 8, N: 1} for nb201, the full space for resnet_cifar)")
    p.add_argument("--students", type=int, default=32, help="students sampled, one per equal-width log-params bin")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the stratified sample (and of the --candidates pool)")
    p.add_argument("--candidates", type=int, default=0, help="draw the sample from a seeded pool of this many distinct members (0: the whole space)")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz the subset is drawn from")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="test .npz, used whole unless --test-images")
    p.add_argument("--train-images", type=int, default=5000, help="a stratified subset of --train-file the students train on")
    p.add_argument("--test-images", type=int, default=0, help="a stratified subset of --test-file (0: all of it; smoke tests only)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the training (and test) subsets")
    p.add_argument("--image-size", type=int, default=32, help="image side; not 32 only with a --teacher-checkpoint trained at that size")
    p.add_argument("--teacher", default="resnet56", help="teacher spec")
    p.add_argument("--teacher-checkpoint", default=None, help=f"the teacher's weights (default {data / 'teachers' / 'cifar10_resnet56.th'})")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every student, both runs")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (cosine schedule to 0)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup before the cosine schedule")
    p.add_argument("--losses", default=json.dumps(DEFAULT_LOSSES), help="the distilled objective, YAML/JSON (DistillModule's losses)")
    p.add_argument("--feature-pairs", default=DEFAULT_FEATURE_PAIRS, help="final, stages, or a YAML list of [student_module, teacher_module]")
    p.add_argument("--augment", default="crop,flip", help="augmentations of the cached training views (comma list; 'none' for none)")
    p.add_argument("--views", type=int, default=10, help="fixed augmented views cached per training image (1 without --augment)")
    p.add_argument("--map-dtype", default="float32", choices=("float32", "float16"), help="storage of the cached teacher maps")
    p.add_argument("--seeds", default="0", help="comma list: the first trains every student, each other one reruns the noise subset")
    p.add_argument("--noise-students", type=int, default=8, help="students rerun with each further seed")
    p.add_argument("--fidelity-students", type=int, default=0, help="students rerun with --long-factor × the epochs (0: none)")
    p.add_argument("--long-factor", type=int, default=3, help="how many times longer the fidelity runs train")
    p.add_argument("--short-epochs", type=int, default=0,
                   help="also train every student distilled only for this many epochs (about a third of --epochs), tested on "
                        "--val-images validation images: the cheap signal a user sees (0: none)")
    p.add_argument("--val-images", type=int, default=5000,
                   help="the short runs' validation images: a stratified subset of --train-file outside the training subset")
    p.add_argument("--fidelity-first", action="store_true",
                   help="train the fidelity subset short and long before the rest, so a new protocol's fidelity is known early")
    p.add_argument("--only", default=None, metavar="A:B",
                   help="train only positions A..B-1 of the ground-truth order, no other stage (a slice of the population, e.g. for a recipe check)")
    p.add_argument("--stages", default=None, metavar="NAMES",
                   help="comma list of the stages to run (ground_truth, noise, fidelity, short; default all): two processes may split a "
                        "protocol's stages, each writes its own results files")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine: OpenMP threads wait on each other)")
    p.add_argument("--device", default="cpu", help="where students train (figures are bit-reproducible on the CPU)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", default=None, help="summary JSON (default benchmarks/results/distill_ground_truth_<population>.json)")
    return p.parse_args(list(argv))


def parse_yaml(text: str, flag: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DasError(f"{flag} {text!r} is not YAML/JSON ({' '.join(str(err).split())})") from None


def parse_slice(text: str, n: int) -> tuple[int, int]:
    """``A:B`` -> (A, B) with 0 <= A < B <= n."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise DasError(f"--only {text!r} must be two positions A:B such as 6:14") from None
    if not 0 <= start < stop <= n:
        raise DasError(f"--only {text!r} must satisfy 0 <= A < B <= {n} (the students sampled)")
    return start, stop


STAGE_NAMES = ("ground_truth", "noise", "fidelity", "short")


def parse_stages(text: str) -> set[str]:
    names = {t.strip() for t in text.split(",") if t.strip()}
    if not names or not names <= set(STAGE_NAMES):
        raise DasError(f"--stages {text!r} must be a comma list of {', '.join(STAGE_NAMES)}")
    return names


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise DasError(f"--seeds {text!r} must be a comma-separated list of integers, e.g. 0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise DasError(f"--seeds {text!r} must name at least one seed, each once")
    return seeds


# --------------------------------------------------------------------------- sampling


def trainable(spec: ArchSpec) -> bool:
    """False for a student whose output cannot depend on its input (an NB201 cell cut by ``none`` edges)."""
    if spec.space != "nb201":
        return True
    reached = {0}
    for (target, source), op in zip(EDGES, parse_arch(spec.choice("arch"))):  # EDGES is in node order
        if op != "none" and source in reached:
            reached.add(target)
    return 3 in reached


def candidates(space: SearchSpace, pool: int, seed: int) -> list[ArchSpec]:
    """One trainable member per isomorphism class, in enumeration order; a seeded subset of ``pool`` of them when pool > 0."""
    classes: dict[str, ArchSpec] = {}
    for spec in space.enumerate():
        classes.setdefault(space.canonical(spec), spec)
    specs = [s for s in classes.values() if trainable(s)]
    if pool:
        keep = np.sort(np.random.default_rng(seed).permutation(len(specs))[:pool])
        specs = [specs[i] for i in keep]
    return specs


def stratified_sample(params: Sequence[int], k: int, seed: int) -> tuple[list[int], list[int], list[float]]:
    """K indices drawn one per equal-width bin of log params (see the module docstring), sorted by params.

    Returns the indices, each one's bin, and the K + 1 bin edges (log params).
    """
    if len(params) < k:
        raise DasError(f"--students {k} is more than the {len(params)} candidate students; ask for fewer or raise --candidates")
    logp = np.log(np.asarray(params, dtype=np.float64))
    edges = np.linspace(logp.min(), logp.max(), k + 1)
    bins = np.clip(np.searchsorted(edges, logp, side="right") - 1, 0, k - 1)
    rng = np.random.default_rng(seed)
    members = [rng.permutation(np.flatnonzero(bins == b)).tolist() for b in range(k)]
    picked = [m.pop(0) for m in members if m]
    while len(picked) < k:  # the students of empty bins: one more from each of the fullest bins
        fullest = sorted((b for b in range(k) if members[b]), key=lambda b: (-len(members[b]), b))
        picked.extend(members[b].pop(0) for b in fullest[:k - len(picked)])
    picked.sort(key=lambda i: (params[i], i))
    return picked, [int(bins[i]) for i in picked], edges.tolist()


def load_or_sample(path: Path, space: SearchSpace, settings: dict[str, Any], num_classes: int, log=print) -> list[dict[str, Any]]:
    """The sample in ``path`` when it was drawn with ``settings``; else drawn now and written there."""
    if path.is_file():
        saved = json.loads(path.read_text())
        mine = flatten(json.loads(json.dumps(settings)))  # as it was written: tuples (a space's choice lists) read back as lists
        theirs = flatten(saved.get("settings", {}))
        if changed := sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<absent>") != theirs.get(k, "<absent>")):
            diff = "; ".join(f"{k}: file {theirs.get(k, '<absent>')!r}, now {mine.get(k, '<absent>')!r}" for k in changed)
            raise DasError(f"{path} holds a sample drawn with other settings ({diff}); rerun with those settings or choose another --out")
        return saved["students"]
    started = time.perf_counter()
    specs = candidates(space, settings["candidates"], settings["sample_seed"])
    params = [count_params(space.build(s, num_classes)) for s in specs]
    picked, bins, edges = stratified_sample(params, settings["students"], settings["sample_seed"])
    students = [{"key": specs[i].to_json(), "arch": str(specs[i]), "spec": specs[i].to_dict(), "params": params[i], "bin": b}
                for i, b in zip(picked, bins)]
    write_json(path, {"settings": settings, "candidates": len(specs), "bin_edges_log_params": edges,
                      "seconds": time.perf_counter() - started, "students": students})
    log(f"sampled {len(students)} of {len(specs)} candidates ({min(params):,}-{max(params):,} params) in {time.perf_counter() - started:.0f} s -> {path}")
    return students


def evenly_spaced(k: int, n: int) -> list[int]:
    """``n`` of the indices 0..k-1 spread evenly from the first to the last (the middle one if n = 1)."""
    if n == 1:
        return [(k - 1) // 2]
    return sorted({round(i * (k - 1) / (n - 1)) for i in range(n)})


# --------------------------------------------------------------------------- data, teacher, stages


def load_data(args: argparse.Namespace) -> PopulationData:
    """The stratified training subset and the test set (or its stratified subset), resized to --image-size."""
    return _load(args)[0]


def validation_data(args: argparse.Namespace, data: PopulationData, dm: DasDataModule) -> PopulationData:
    """The training subset with --val-images validation images in place of the test set: a stratified, seeded
    subset of the training file's images that the students do not train on (the short runs' judge: never the test set)."""
    every = dm.subset("train")
    _, trained = stratified_split(every.labels, args.train_images / len(every), args.data_seed)
    rest = torch.ones(len(every), dtype=torch.bool)
    rest[trained] = False
    others = rest.nonzero().flatten()
    if not 1 <= args.val_images <= len(others):
        raise DasError(f"--val-images {args.val_images} must be between 1 and the {len(others)} training-file images outside the training subset")
    _, keep = stratified_split(every.labels[others], args.val_images / len(others), args.data_seed)
    return PopulationData(data.train, every.subset(others[keep]), data.mean, data.std, data.num_classes)


def _load(args: argparse.Namespace) -> tuple[PopulationData, DasDataModule]:
    size = None if args.image_size == 32 else args.image_size
    dm = DasDataModule(dataset="npz", train_file=args.train_file, test_file=args.test_file, image_size=size,
                       batch_size=args.batch_size, val_fraction=0.0, seed=args.data_seed)
    data = PopulationData.from_datamodule(dm, args.train_images, seed=args.data_seed)
    if args.test_images:
        test = data.test
        if not 1 <= args.test_images <= len(test):
            raise DasError(f"--test-images {args.test_images} must be between 1 and the {len(test)} images of {args.test_file} (0: all)")
        _, keep = stratified_split(test.labels, args.test_images / len(test), args.data_seed)
        data = PopulationData(data.train, test.subset(keep), data.mean, data.std, data.num_classes)
    return data, dm


def teacher_accuracy(args: argparse.Namespace, data: PopulationData, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The teacher's test accuracy, reused from the last summary when its weights and the data are the same."""
    teacher = build_model(args.teacher, data.num_classes, checkpoint=args.teacher_checkpoint)
    ident = {"spec": args.teacher, "checkpoint": Path(args.teacher_checkpoint).name, "weights": weights_digest(teacher), "data": data.digest()}
    if previous and all(previous.get(k) == v for k, v in ident.items()):
        return previous
    started = time.perf_counter()
    acc = evaluate(teacher.to(args.device), data, args.device)
    return {**ident, "test_acc": acc, "test_images": len(data.test), "seconds": time.perf_counter() - started, "date": now_iso()}


@dataclass(frozen=True)
class Stage:
    """One results file: these students at this seed and this many epochs."""

    name: str  # ground_truth, noise or fidelity
    seed: int
    epochs: int
    students: list[str]  # keys, in training order
    path: Path


def stem(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".json"))


def plan(out: Path, keys: list[str], seeds: list[int], epochs: int, noise: int, fidelity: int, long_factor: int,
         short: int = 0) -> list[Stage]:
    base = str(stem(out))
    order = [keys[i] for i in spread_order(len(keys))]
    subset = lambda n: [keys[i] for i in spread_order(len(keys)) if i in set(evenly_spaced(len(keys), n))]  # noqa: E731
    stages = [Stage("ground_truth", seeds[0], epochs, order, Path(base + ".jsonl"))]
    stages += [Stage("noise", s, epochs, subset(noise), Path(f"{base}.seed{s}.jsonl")) for s in seeds[1:]]
    if fidelity:
        stages.append(Stage("fidelity", seeds[0], epochs * long_factor, subset(fidelity), Path(f"{base}.epochs{epochs * long_factor}.jsonl")))
    if short:
        stages.append(Stage("short", seeds[0], short, order, Path(f"{base}.short{short}.jsonl")))
    return stages


def fidelity_first(stages: list[Stage]) -> list[Stage]:
    """The fidelity subset's short runs and its long runs first, then every stage as planned.

    A lengthened protocol is worth training whole only if it passes the fidelity check, so that
    check comes first; the ground-truth stage then skips the students it already holds.
    """
    fidelity = [s for s in stages if s.name == "fidelity"]
    if not fidelity:
        raise DasError("--fidelity-first needs --fidelity-students N (N >= 1): there is no fidelity subset to train first")
    subset = set(fidelity[0].students)
    short = replace(stages[0], students=[k for k in stages[0].students if k in subset])
    return [short, fidelity[0], *[s for s in stages if s.name != "fidelity"]]


def estimate(stages: list[Stage], train_images: int) -> str | None:
    """Expected time of what is left: student-runs × epochs × images at the measured images per second."""
    seen = passes = 0.0
    seconds = 0.0
    for stage in stages:
        done = {r["key"]: r for r in read_results(stage.path)[1]}
        for key in stage.students:
            work = (1 if stage.name == "short" else 2) * stage.epochs * train_images  # distilled (and alone)
            if key in done:
                seen += work
                seconds += done[key]["seconds_distilled"] + done[key]["seconds_alone"]
            else:
                passes += work
    if not seconds:
        return None
    rate = seen / seconds
    return (f"expected: students left × their runs × their epochs × {train_images} images = {passes:,.0f} image passes at {rate:.0f} img/s "
            f"(measured on the finished ones) ≈ {passes / rate / 3600:.1f} h, plus a teacher cache per results file")


# --------------------------------------------------------------------------- summary


def summarise(out: Path, sample: list[dict[str, Any]], teacher: dict[str, Any] | None) -> dict[str, Any]:
    base = stem(out)
    settings, main = read_results(Path(str(base) + ".jsonl"))
    by_key = {r["key"]: r for r in main}
    students = []
    for s in sample:
        r = by_key.get(s["key"])
        students.append({"arch": s["arch"], "spec": s["spec"], "params": s["params"], "bin": s["bin"],
                         **({k: r[k] for k in ("flops", "distilled_acc", "alone_acc", "gain", "seconds_distilled", "seconds_alone",
                                               "distilled_diverged", "alone_diverged", "threads", "device")} if r else {"trained": False})})
    result: dict[str, Any] = {"students": students, "trained": sum(s["key"] in by_key for s in sample), "sampled": len(sample)}
    flat = flatten(settings or {})
    others: dict[str, list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]] = {"noise": [], "fidelity": []}
    skipped = {}
    for kind, pattern, allowed in (("noise", ".seed*.jsonl", {"seed"}), ("fidelity", ".epochs*.jsonl", {"recipe.epochs"})):
        for path in sorted(base.parent.glob(base.name + pattern)):
            theirs, records = read_results(path)
            theirs_flat = flatten(theirs or {})
            differ = sorted(k for k in set(flat) | set(theirs_flat) if flat.get(k) != theirs_flat.get(k) and k not in allowed)
            if differ:
                skipped[path.name] = f"settings differ from the ground truth's in {differ}"
            else:
                others[kind].append((path, theirs or {}, records))
    if others["noise"]:
        gains: dict[str, list[float]] = {}
        per_seed = []
        for path, theirs, records in others["noise"]:
            pairs = [(by_key[r["key"]], r) for r in records if r["key"] in by_key]
            for a, b in pairs:
                gains.setdefault(a["key"], [a["gain"]]).append(b["gain"])
            per_seed.append({"file": path.name, "seed": theirs.get("seed"), "n": len(pairs),
                             "rho_distilled_acc": rho([a["distilled_acc"] for a, _ in pairs], [b["distilled_acc"] for _, b in pairs]),
                             "rho_gain": rho([a["gain"] for a, _ in pairs], [b["gain"] for _, b in pairs]),
                             "rho_alone_acc": rho([a["alone_acc"] for a, _ in pairs], [b["alone_acc"] for _, b in pairs])})
        stds = {k: statistics.stdev(v) for k, v in gains.items() if len(v) > 1}
        result["seed_noise"] = {"against_seed": settings.get("seed") if settings else None, "per_seed": per_seed,
                                "gain_std_per_student": [{"arch": by_key[k]["arch"], "params": by_key[k]["params"], "gains": gains[k], "std": sd}
                                                         for k, sd in stds.items()],
                                "gain_std_mean": statistics.fmean(stds.values()) if stds else None}
    if others["fidelity"]:
        result["fidelity"] = []
        for path, theirs, records in others["fidelity"]:
            pairs = [(by_key[r["key"]], r) for r in records if r["key"] in by_key]
            result["fidelity"].append({"file": path.name, "epochs_short": flat.get("recipe.epochs"), "epochs_long": flatten(theirs).get("recipe.epochs"),
                                       "n": len(pairs),
                                       "rho_distilled_acc": rho([a["distilled_acc"] for a, _ in pairs], [b["distilled_acc"] for _, b in pairs]),
                                       "rho_gain": rho([a["gain"] for a, _ in pairs], [b["gain"] for _, b in pairs]),
                                       "students": [{"arch": a["arch"], "params": a["params"], "distilled_short": a["distilled_acc"],
                                                     "distilled_long": b["distilled_acc"], "gain_short": a["gain"], "gain_long": b["gain"]}
                                                    for a, b in pairs]})
    shorts = []
    for path in sorted(base.parent.glob(base.name + ".short*.jsonl")):
        theirs, records = read_results(path)
        pairs = [(by_key[r["key"]], r) for r in records if r["key"] in by_key]
        shorts.append({"file": path.name, "epochs": flatten(theirs or {}).get("recipe.epochs"), "val_images": (theirs or {}).get("test_images"),
                       "teacher_weights": (theirs or {}).get("teacher_weights"),
                       "same_teacher_as_ground_truth": (theirs or {}).get("teacher_weights") == (settings or {}).get("teacher_weights"),
                       "n": len(pairs), "rho_with_ground_truth": rho([a["distilled_acc"] for a, _ in pairs], [b["distilled_acc"] for _, b in pairs]),
                       "students": [{"arch": b["arch"], "params": b["params"], "distilled_val_acc": b["distilled_acc"],
                                     "diverged": b["distilled_diverged"], "seconds": b["seconds_distilled"]} for _, b in pairs]})
    if shorts:
        result["short_runs"] = shorts
    if skipped:
        result["skipped_files"] = skipped
    every = main + [r for kind in others.values() for _, _, records in kind for r in records]
    result["timing"] = {"seconds_total": sum(r["seconds_distilled"] + r["seconds_alone"] for r in every),
                        "seconds_per_student_mean": statistics.fmean(r["seconds_distilled"] + r["seconds_alone"] for r in main) if main else None,
                        "devices": sorted({r["device"] for r in every}), "threads": sorted({r["threads"] for r in every})}
    result["teacher"] = teacher
    result["recipe"] = settings.get("recipe") if settings else None
    return result


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    seeds = parse_seeds(args.seeds)
    wanted = None if args.stages is None else parse_stages(args.stages)
    if wanted is not None and args.only is not None:
        raise DasError("--stages and --only do not combine: --only already runs a slice of the ground-truth stage alone")
    for key in ("students", "train_images", "epochs", "batch_size", "views", "long_factor"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    if args.students < 2:
        raise DasError(f"--students {args.students} must be at least 2 (a population spans a parameter range)")
    if len(seeds) > 1 and not 1 <= args.noise_students <= args.students:
        raise DasError(f"--noise-students {args.noise_students} must be between 1 and --students {args.students} when --seeds names a second seed")
    if not 0 <= args.fidelity_students <= args.students:
        raise DasError(f"--fidelity-students {args.fidelity_students} must be between 0 (none) and --students {args.students}")
    if args.test_images < 0 or args.candidates < 0:
        raise DasError("--test-images and --candidates must be >= 0 (0: all)")
    if args.image_size != 32 and args.teacher_checkpoint is None:
        raise DasError(f"--image-size {args.image_size} needs a --teacher-checkpoint trained at {args.image_size}×{args.image_size}: "
                       "the default ResNet-56 is trained at 32×32 and scores far lower on smaller inputs (fine-tuning it is not done here)")
    args.teacher_checkpoint = args.teacher_checkpoint or str(shared_data_dir() / "teachers" / "cifar10_resnet56.th")
    space_args = SPACE_ARGS[args.population] if args.space_args is None else parse_yaml(args.space_args, "--space-args")
    if not isinstance(space_args, dict):
        raise DasError(f"--space-args {args.space_args!r} must be a mapping such as '{{C: 8, N: 1}}'")
    losses = parse_yaml(args.losses, "--losses")
    if not isinstance(losses, dict):
        raise DasError(f"--losses {args.losses!r} must be a mapping such as {json.dumps(DEFAULT_LOSSES)!r}")
    pairs = args.feature_pairs if args.feature_pairs in ("final", "stages") else parse_yaml(args.feature_pairs, "--feature-pairs")
    augment = [] if args.augment.strip() in ("", "none") else [a.strip() for a in args.augment.split(",")]
    try:
        torch.device(args.device)
    except RuntimeError:
        raise DasError(f"--device {args.device!r} is not a torch device; give cpu, cuda or cuda:N") from None
    threads = set_threads(args.threads)
    out = Path(args.out or f"benchmarks/results/{BENCHMARK}_{args.population}.json")

    try:
        space = create_space(SPACE_OF[args.population], **space_args)
    except TypeError:
        accepted = [n for n in inspect.signature(SPACES.get(SPACE_OF[args.population])).parameters if n != "self"]
        raise DasError(f"--space-args {args.space_args!r} gives {sorted(space_args)}; the {args.population} space takes {accepted} "
                       "(YAML needs a space after each colon: '{C: 8, N: 1}')") from None
    recipe = lambda epochs: Recipe(epochs=epochs, batch_size=args.batch_size, losses=losses, feature_pairs=pairs,  # noqa: E731
                                   optim=OptimConfig(lr=args.lr, warmup_epochs=args.warmup_epochs), augment=tuple(augment),
                                   views=args.views, map_dtype=args.map_dtype)
    recipe(args.epochs)  # bad recipe values fail before any data is read
    if args.short_epochs < 0 or args.val_images < 1:
        raise DasError(f"--short-epochs {args.short_epochs} must be >= 0 (0: none) and --val-images {args.val_images} at least 1")
    data, dm = _load(args)
    val = validation_data(args, data, dm) if args.short_epochs else None
    sample_settings = {"benchmark": BENCHMARK, "population": args.population, "space_args": space.space_args, "students": args.students,
                       "sample_seed": args.sample_seed, "candidates": args.candidates, "num_classes": data.num_classes,
                       "rule": "one per equal-width log-params bin; empty bins' students to the fullest bins; isomorphs and disconnected cells dropped"}
    sample = load_or_sample(Path(str(stem(out)) + ".students.json"), space, sample_settings, data.num_classes)
    keys = [s["key"] for s in sample]
    specs = {s["key"]: ArchSpec.from_dict(s["spec"]) for s in sample}
    stages = plan(out, keys, seeds, args.epochs, args.noise_students if len(seeds) > 1 else 0, args.fidelity_students, args.long_factor,
                  args.short_epochs)
    if args.only is not None:
        start, stop = parse_slice(args.only, len(keys))
        stages = [replace(stages[0], students=stages[0].students[start:stop])]
    elif args.fidelity_first:
        stages = fidelity_first(stages)
    if wanted is not None:
        stages = [s for s in stages if s.name in wanted]
        if not stages:
            raise DasError(f"--stages {args.stages!r} names no stage this command plans (add --seeds 0,1 for noise, --fidelity-students N "
                           "for fidelity, --short-epochs N for short runs)")

    previous = json.loads(out.read_text()).get("teacher") if out.is_file() else None
    teacher = teacher_accuracy(args, data, previous)
    if previous and previous.get("weights") != teacher["weights"]:
        if {s.name for s in stages} != {"short"}:
            raise DasError(f"--teacher-checkpoint {args.teacher_checkpoint} has other weights ({teacher['weights']}) than this population's "
                           f"teacher ({previous.get('checkpoint')}, {previous.get('weights')}); only --stages short may use another teacher")
        print(f"note: the short runs use {teacher['checkpoint']} ({teacher['weights']}, {teacher['test_acc']:.2f}%), the ground truth "
              f"{previous.get('checkpoint')} ({previous.get('weights')}, {previous.get('test_acc')}%); the summary keeps the ground truth's "
              "teacher and marks each short file's own", flush=True)
        teacher = previous
    print(f"teacher {args.teacher}: {teacher['test_acc']:.2f}% on {teacher['test_images']} test images; {len(sample)} {args.population} "
          f"students ({sample[0]['params']:,}-{sample[-1]['params']:,} params) train on {len(data.train)} images of "
          f"{data.input_shape[-1]}×{data.input_shape[-1]}; {threads} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)

    def write() -> dict[str, Any]:
        result = {"benchmark": BENCHMARK, "population": args.population, **summarise(out, sample, teacher),
                  "settings": {**{k: v for k, v in vars(args).items() if k not in ("no_progress",)}, "space_args": space.space_args,
                               "seeds": seeds, "augment": augment, "train_images_used": len(data.train), "test_images_used": len(data.test),
                               "input_shape": list(data.input_shape), "data_digest": data.digest(),
                               "stages": [{"name": st.name, "seed": st.seed, "epochs": st.epochs, "file": st.path.name,
                                           "students": [str(specs[k]) for k in st.students]} for st in stages],
                               "sample": [{"arch": s["arch"], "params": s["params"], "bin": s["bin"]} for s in sample],
                               "threads": threads, "load_average": list(os.getloadavg()), "seconds_this_invocation": time.perf_counter() - wall,
                               "date": now_iso(), "machine": machine_info(), "code": code_version()}}
        write_json(out, result)
        return result

    def run(stage: Stage, keys: list[str]) -> None:
        print(f"{stage.name}: {len(keys)} students, seed {stage.seed}, {stage.epochs} epochs -> {stage.path}", flush=True)
        short = stage.name == "short"
        train_population([specs[k] for k in keys], args.teacher, val if short else data, recipe(stage.epochs), stage.path, seed=stage.seed,
                         teacher_checkpoint=args.teacher_checkpoint, device=args.device, progress=not args.no_progress, keep_cache=True,
                         alone=not short)

    try:
        if (note := estimate(stages, len(data.train))) is None:
            run(stages[0], stages[0].students[:1])  # measure one student (the middle of the range) before promising a time
            note = estimate(stages, len(data.train))
        print(note, flush=True)
        for stage in stages:
            run(stage, stage.students)
    finally:
        result = write()

    rows = [[s["arch"][:60], f"{s['params']:,}", fmt(s.get("distilled_acc"), 2), fmt(s.get("alone_acc"), 2),
             "—" if s.get("gain") is None else f"{s['gain']:+.2f}"] for s in result["students"]]
    print_table(["student", "params", "distilled %", "alone %", "gain"], rows)
    for seed in result.get("seed_noise", {}).get("per_seed", []):
        print(f"seed noise vs seed {seed['seed']} (n={seed['n']}): ρ distilled {fmt(seed['rho_distilled_acc'], 3)}, "
              f"ρ gain {fmt(seed['rho_gain'], 3)}; mean std of the gain {fmt(result['seed_noise']['gain_std_mean'], 2)} pts")
    for fid in result.get("fidelity", []):
        print(f"fidelity {fid['epochs_short']} vs {fid['epochs_long']} epochs (n={fid['n']}): ρ distilled {fmt(fid['rho_distilled_acc'], 3)}")
    for short in result.get("short_runs", []):
        print(f"short runs: {short['epochs']} epochs on {short['val_images']} validation images (n={short['n']}): "
              f"ρ with the ground truth's distilled accuracy {fmt(short['rho_with_ground_truth'], 3)}")
    timing = result["timing"]
    print(f"teacher {teacher['test_acc']:.2f}%; {result['trained']}/{result['sampled']} students trained; "
          f"{timing['seconds_total'] / 3600:.2f} h of training in all, {fmt(timing['seconds_per_student_mean'], 0)} s per student")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
