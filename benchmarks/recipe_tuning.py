"""Does train.py's recipe study pay? Tuned against the default and the best fixed recipe; short runs against full ones.

Issue 31, items 3 and 4, and item 5's DKD beside KD, on two teacher–student pairs under their
committed protocols:

- **R1**, ResNet-56 → ResNet-20 on CIFAR-10 at 32×32: ``cifar10_distill``'s protocol. A seeded,
  stratified pool of ``--r1-train-images`` + ``--val-images`` images of ``train_jpeg.npz`` (data
  seed 0) that the data module splits into 10,000 training and 1,000 validation images; 15
  epochs, batch 128, SGD + Nesterov, peak lr 0.05 after one warmup epoch, cosine to 0,
  channels-last; tested on all of ``test_jpeg.npz``. Every R1 run is one train.py command, run in
  this process with ``--baseline false`` in its own directory: on equal settings it trains the
  same weights as cifar10_distill's run, to the bit (a test checks it at tiny size).
- **R2**, the NB201 population's protocol as the cosine-scale rule ran it (``distill_ground_truth
  --population nb201 --image-size 16 --only 6:14``): the 8 cells at positions 6-13 of the
  committed sample's order (C=8, N=1), 16×16 images, the ResNet-56 fine-tuned at 16×16 (the
  committed ``cifar10_resnet56_16px_xeon.pt``), das's population trainer with 10 cached crop+flip
  views, 10 epochs on 5,000 training images, all 10,000 test images. Here the 5,000 come from one
  pool with the ``--val-images`` the study judges on (the rule's runs drew theirs without a
  validation split and had another teacher file, so their figures are not reused).

- **R3**, R2's protocol and teacher on the resnet_cifar students (population C's sample) at
  positions 8-11 of its order (``--r3-only 8:12``): students no recipe study had seen, kept to
  judge the tuner v2 (docs/decisions.md); evidence only (default, s400, tuned_v2).

**Recipes** (:data:`RECIPES`; the logit terms are cifar10_distill's convex mix CE ½ + logit loss ½,
other settings the protocol's): ``alone`` (CE only), ``default`` (train.py's: KD at T 4 + the cosine
loss at scale 1 on every stage pair), ``kd`` (no cosine term), ``kd_t1`` (KD at T 1), ``s400``
(stage pairs at scale 400: R1's best fixed recipe in the committed table), ``s25_final`` and
``s400_final`` (the final maps at 25 and 400), ``default_lr4`` (the default at 4× the learning
rate: does a short schedule favour recipes that learn fast?), ``dkd_b8`` (DKD with α 1, β 8, T 4:
the paper's CIFAR setting) and ``dkd_b2`` (β 2: the authors' config for ResNet-56 → ResNet-20),
both taken from the authors' CIFAR-100 configs and run here on CIFAR-10 as CE ½ + DKD ½ (their
CE 1 + DKD 1, halved as KD's mix is) without their 20-epoch ramp of the DKD term (das warms the
learning rate up instead; docs/reference.md); ``tuned``, what ``train.py --tune.trials N`` chooses;
and ``tuned_v2``, the tuner v2 fixed in docs/decisions.md before any of its runs: ``--tune.anchors
[0,10,100,1000] --tune.pruner none --tune.epochs 5`` (``--v2-tune-epochs``) with the guard on,
its trials by the same budget rule (R1 9, R2 and R3 6). ``tuner_v2`` in the summary applies its
rule (:func:`v2_verdict`). ``tuned_v3``, the tuner v3 fixed in docs/decisions.md before any of its
runs: the v2 with ``--tune.refine 4`` (after the anchors, trials that bisect the cosine scale around
the best one); ``tuner_v3`` applies its rule (:func:`v3_verdict`).

**Parts** (``--parts``):

- ``evidence``: per seed (``--seeds``), ``tuned``, ``default``, the best fixed recipe (R1
  ``s400``; R2 ``default``, scale 1 being R2's best fixed scale) and ``alone``; on R1 also ``kd``,
  ``dkd_b8`` and ``dkd_b2``. The tuned run is train.py's study on the validation split
  (``--tune.trials N --tune.epochs E_t --tune.train_images I_t --tune.seed SEED``, train.py's
  default ranges, ``--logit-losses`` the logit losses a trial may choose) and then its final run
  (R1); on R2 the study is ``train.py ... --tune.only true`` per student, and its choice
  (``tune/best.json``) is trained on the population trainer as every other R2 run. Reported:
  test accuracy (the mean over students and seeds; the std of the seeds' means), the gain over
  ``alone`` (same students and seeds; alone at ``--lr``, also for ``tuned``, whose own train.py
  baseline would take the tuned learning rate), the tuning's cost as a multiple of one final run (the
  study's seconds, every trial and each process's teacher cache, over the final run's fit and
  test: results.json's ``tune`` entry on R1, the population trainer's seconds on R2), and the
  goals: R1 tuned ≥ s400 − 0.5 point, R2 tuned ≥ default − 0.3, the cost ≤ 1×.
- ``fidelity``: every recipe of :data:`FIDELITY` as the tuner's trial (das.tune.trials: the
  population trainer on the teacher's cached outputs, the final schedule compressed into E epochs,
  I_t training images, judged on the validation split) for each E of ``--fidelity-epochs``, and
  at the full schedule (test accuracy of the final runs, shared with the evidence), at
  ``--fidelity-seeds``. Per E: Spearman's ρ between the two rankings of the recipes (means over
  students and seeds) and the regret, the full-schedule points lost by taking the short
  schedule's best.

**The switching guard, replayed** (docs/decisions.md, fixed before any R1 run): each tuned run's
study is read again under ``tune.switch_z`` 1.645 (its configured trial's accuracy from the record,
or, for records made before train.py reported it, from the study's ``trials.csv`` in the work
folder); a run the guard keeps on the configured recipe takes the ``default`` run's test accuracy
for the same student and seed, which is the same training (``premise`` checks it on the runs whose
study chose the configured recipe itself). Row ``tuned_guarded``, ``evidence.guard`` per pair, and
``switch_guard``: whether the rule makes the guard train.py's default (it did, so the tuned runs
pin ``--tune.switch_z 0``: the unguarded study every record was made with).

**The tuning budget rule**: ``N = floor(budget × E × I / (E_t × I_t))`` trials (``--budget``
0.75), so the trials train on at most ``budget`` × the image passes of one final run (E epochs
on I images). The rule leaves out the trials' validation passes and teacher cache (the
measured cost counts them) and, on R1, the final run's teacher forward on every batch (trials
read a cache), so the measured multiple judges the goal. Defaults: R1 0.75 × 15 × 10,000 /
(3 × 2,500) = 15 trials, R2 0.75 × 10 × 5,000 / (3 × 1,250) = 10.

**When a tune.epochs is safe** (fixed before any full-size run): E is safe when on every pair
the short schedule's ranking has ρ ≥ 0.7 with the full schedule's and its best recipe is within
the pair's goal tolerance (R1 0.5, R2 0.3 point) of the full schedule's best at the full schedule.

**Files**: ``OUT.R1.runs.jsonl`` and ``OUT.R2.runs.jsonl`` (``OUT`` is ``--out`` without
``.json``) hold one record per finished run after a settings line (a file written with other
settings is refused), each appended at once: a rerun of the same command skips finished runs,
and a kill loses at most the run in progress (a tuned run's finished trials stay in its study
journal, which the rerun continues). The summary ``--out``, rewritten after every run, covers
every pair with a runs file there, so ``--pairs R2`` then ``--pairs R1``, or the two as separate
one-thread processes at once on the 2-core machine, end with one summary of both. train.py's
run directories and the data subsets go to ``OUT.json.work/``. Before the bulk of the work the
expected time is printed, from the speed of the runs already finished or, for a kind of run
not yet measured, :data:`PRIOR_SPEED`.

    export OMP_NUM_THREADS=1
    python -m benchmarks.recipe_tuning --smoke --no-progress      # real data at tiny sizes, a temporary --out: ~2 min
    python -m benchmarks.recipe_tuning --pairs R2 --no-progress   # the cheap pair: ~1.5 h on the quiet 2-core machine
    python -m benchmarks.recipe_tuning --pairs R1 --no-progress   # ~5.5 h; the two may also run at once, one process each
    python -m benchmarks.recipe_tuning --pairs R3,R1,R2 --parts evidence --recipes default,s400,tuned_v2 --threads 2 --no-progress
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (LOGIT_TERMS, code_version, fmt, json_safe, machine_info, now_iso, parse_list, print_table, read_results, rho,
                               set_threads, spread_order, subset_file)
from das.calibrate.data import PopulationData
from das.calibrate.results import ResultsFile
from das.calibrate.teacher_cache import TeacherCache, build_teacher_cache, cached_modules
from das.calibrate.trainer import Recipe, StudentRun, evaluate, init_student, weights_digest
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.distill.module import DEFAULT_FEATURE_PAIRS, DEFAULT_LOSSES
from das.distill.optim import OptimConfig
from das.errors import DasError
from das.features import feature_points
from das.models import build_model
from das.paths import shared_data_dir
from das.report.inputs import require_file
from das.tune import command as train_command
from das.tune.config import TuneConfig, logit_losses
from das.tune.study import switch_margin
from das.tune.trials import CHANNELS_LAST, ShortRuns, short_schedule

BENCHMARK = "recipe_tuning"
PARTS = ("evidence", "fidelity")
PAIRS = ("R1", "R2", "R3")
#: The pairs the safe-epochs rule and the switching guard's rule were fixed on (R3 came later, to judge the tuner v2).
FIRST_PAIRS = ("R1", "R2")
#: Points the tuned recipe may trail the pair's reference (R1: s400, R2: default, R3: the better fixed one): the issue's goals.
TOLERANCE = {"R1": 0.5, "R2": 0.3, "R3": 0.5}
#: The recipe each pair's tuned recipe is held against; R3's is whichever of default and s400 tests better on its cells.
REFERENCE = {"R1": "s400", "R2": "default", "R3": None}
R3_FIXED = ("default", "s400")
#: Tuning may cost at most this many final runs (the issue's goal).
COST_GOAL = 1.0
#: A tune.epochs is safe when ρ reaches this on every pair (and the regret is within the tolerance).
SAFE_RHO = 0.7
AUGMENT = ("crop", "flip")


def cosine(scale: float) -> dict[str, Any]:
    return {"cosine": {"weight": 1.0, "scale": scale}}


def dkd(beta: float) -> dict[str, Any]:
    return {"ce": 0.5, "dkd": {"weight": 0.5, "alpha": 1.0, "beta": beta, "temperature": 4.0}}


#: The fixed recipes: what each changes in the protocol's model settings (lr as a multiple of --lr). A new one is a line.
RECIPES: dict[str, dict[str, Any]] = {
    "alone": {"teacher": None, "losses": {"ce": 1.0}},
    "default": {"losses": copy.deepcopy(DEFAULT_LOSSES), "feature_pairs": DEFAULT_FEATURE_PAIRS},
    "kd": {"losses": LOGIT_TERMS},
    "kd_t1": {"losses": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 1.0}}},
    "s400": {"losses": {**LOGIT_TERMS, **cosine(400.0)}, "feature_pairs": "stages"},
    "s25_final": {"losses": {**LOGIT_TERMS, **cosine(25.0)}, "feature_pairs": "final"},
    "s400_final": {"losses": {**LOGIT_TERMS, **cosine(400.0)}, "feature_pairs": "final"},
    "default_lr4": {"losses": copy.deepcopy(DEFAULT_LOSSES), "feature_pairs": DEFAULT_FEATURE_PAIRS, "lr_factor": 4.0},
    "dkd_b8": {"losses": dkd(8.0)},  # the paper's CIFAR setting: α 1, β 8, T 4
    "dkd_b2": {"losses": dkd(2.0)},  # the authors' ResNet-56 → ResNet-20 config: β 2
}
TUNED = "tuned"
#: The tuner v2 (docs/decisions.md, fixed before any of its runs): the cosine anchors as fixed trials, no pruning, 5-epoch
#: trials under the same budget rule, the switching guard on. Its settings become train.py's defaults if V2_COST allows.
TUNED_V2 = "tuned_v2"
V2 = {"anchors": [0.0, 10.0, 100.0, 1000.0], "pruner": "none", "switch_z": 1.645}
V2_COST = 0.3
#: The tuner v3 (docs/decisions.md, fixed before any of its runs): the v2 with the drawn trials after the anchors replaced by
#: up to 4 refinements of the cosine scale. tune.refine 4 becomes train.py's default if V3_COST allows.
TUNED_V3 = "tuned_v3"
V3 = {**V2, "refine": 4}
V3_COST = 0.3
#: The recipes whose run is a study (train.py --tune.trials) and then a final run.
STUDIES = (TUNED, TUNED_V2, TUNED_V3)
#: What each study recipe adds to the study's size in its records (TUNED: nothing, as first shipped).
STUDY_SETTINGS: dict[str, dict[str, Any]] = {TUNED: {}, TUNED_V2: V2, TUNED_V3: V3}
#: The tuned runs replayed under the switching guard (docs/decisions.md): the configured recipe unless the best trial
#: beats it by more than GUARD_Z standard errors; it becomes train.py's default if it costs no pair more than GUARD_COST.
GUARDED, GUARD_Z, GUARD_COST = "tuned_guarded", 1.645, 0.3
#: The recipes of the evidence part, in the order they train (the comparison of the goal first).
EVIDENCE = {"R1": ("default", "s400", TUNED, "alone", "kd", "dkd_b8", "dkd_b2", TUNED_V2, TUNED_V3),
            "R2": ("default", TUNED, "alone", TUNED_V2, TUNED_V3), "R3": ("default", "s400", TUNED_V2, TUNED_V3)}
#: The fixed recipes of the fidelity part: the tuner's dimensions (cosine scale 0/1/25/400, pairing, KD temperature, the
#: learning rate, the logit loss), both pairs.
FIDELITY = ("kd", "kd_t1", "default", "default_lr4", "s25_final", "s400", "s400_final", "dkd_b8", "dkd_b2")

#: Images per second of each kind of run until this benchmark has timed one: a train.py run (the teacher forward on
#: every batch; its wall time, validation, tests and export included) and a trial or short run (cached teacher) for R1;
#: a population-trainer run and a short run for R2. Measured 2026-12-06 on the shared 2-core Intel Xeon, 1 thread, the
#: machine otherwise quiet: ResNet-20 distilled in Lightning 183 img/s (alone 331), a short run 268, an NB201 student on
#: the population trainer 1,350-1,880 (its test included); rounded down for the load the machine usually carries.
PRIOR_SPEED = {("R1", "final"): 150.0, ("R1", "short"): 230.0, ("R2", "final"): 1400.0, ("R2", "short"): 1200.0,
               ("R3", "final"): 500.0, ("R3", "short"): 500.0}

SMOKE = {"r1_train_images": 400, "r2_train_images": 400, "val_images": 200, "test_images": 500, "r1_epochs": 1, "r2_epochs": 1,
         "tune_epochs": 1, "v2_tune_epochs": 2, "fidelity_epochs": "1,2", "r1_tune_images": 100, "r2_tune_images": 100, "r2_views": 2,
         "r2_only": "6:8", "r3_only": "8:9", "seeds": "0", "fidelity_seeds": "0", "warmup_epochs": 0.0, "batch_size": 32}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    results = Path("benchmarks/results")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {', '.join(PARTS)}")
    p.add_argument("--pairs", default="R2,R1", help="comma list from R1, R2, run in this order (R2, the cheap pair, first by default)")
    p.add_argument("--seeds", default="0,1", help="the evidence's seeds (student init, batch order, the study's sampler and subset)")
    p.add_argument("--fidelity-seeds", default="0", help="the fidelity part's seeds (short runs, and full runs of recipes the evidence lacks)")
    p.add_argument("--fidelity-epochs", default="1,3,5", help="the short schedules compared with the full one (tune.epochs values)")
    p.add_argument("--recipes", default=None, help=f"only these recipes (default all): {', '.join([*RECIPES, *STUDIES])}")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz the pools are drawn from")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="test .npz, used whole unless --test-images")
    p.add_argument("--test-images", type=int, default=0, help="a stratified subset of the test file (0: all of it; smoke runs only)")
    p.add_argument("--val-images", type=int, default=1000, help="validation images held out of each pair's pool: what the study judges on")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the pools and their validation splits")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (cosine to 0); recipes and the study scale it")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup before the cosine schedule")
    p.add_argument("--r1-teacher", default="resnet56", help="R1's teacher spec")
    p.add_argument("--r1-teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="R1's teacher weights")
    p.add_argument("--r1-student", default="resnet20", help="R1's student spec")
    p.add_argument("--r1-train-images", type=int, default=10000, help="R1's training images")
    p.add_argument("--r1-epochs", type=int, default=15, help="R1's full schedule")
    p.add_argument("--r1-tune-images", type=int, default=2500, help="R1's tune.train_images (and the short runs')")
    p.add_argument("--r2-teacher", default="resnet56", help="R2's teacher spec")
    p.add_argument("--r2-teacher-checkpoint", default=str(results / "teachers" / "cifar10_resnet56_16px_xeon.pt"),
                   help="R2's teacher weights, trained at --r2-image-size")
    p.add_argument("--r2-students", default=str(results / "distill_ground_truth_nb201.students.json"),
                   help="the NB201 population's sample (distill_ground_truth's .students.json)")
    p.add_argument("--r2-only", default="6:14", metavar="A:B", help="R2's students: positions A..B-1 of the sample's training order")
    p.add_argument("--r2-train-images", type=int, default=5000, help="R2's training images")
    p.add_argument("--r2-epochs", type=int, default=10, help="R2's full schedule")
    p.add_argument("--r2-image-size", type=int, default=16, help="R2's image side")
    p.add_argument("--r2-views", type=int, default=10, help="R2's cached crop+flip views per training image (population trainer)")
    p.add_argument("--r2-tune-images", type=int, default=1250, help="R2's tune.train_images (and the short runs')")
    p.add_argument("--r3-students", default=str(results / "distill_ground_truth_resnet_cifar.students.json"),
                   help="R3: the resnet_cifar population's sample (C), trained under R2's protocol")
    p.add_argument("--r3-only", default="8:12", metavar="A:B", help="R3's students: positions A..B-1 of its sample's training order")
    p.add_argument("--tune-epochs", type=int, default=3, help="the evidence's tune.epochs")
    p.add_argument("--v2-tune-epochs", type=int, default=5, help="the tuner v2's tune.epochs (its trials by the same budget rule)")
    p.add_argument("--budget", type=float, default=0.75, help="trials' training image passes as a multiple of one final run's (the rule above)")
    p.add_argument("--trials", type=int, default=None, help="tune.trials on both pairs instead of the budget rule's")
    p.add_argument("--logit-losses", default="kd", help="tune.logit_losses: the logit losses a trial may choose (comma list)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bars")
    p.add_argument("--smoke", action="store_true", help=f"real data at tiny sizes, for a quick check of the whole pipeline: {SMOKE} "
                   "unless given, and --out in the temporary folder")
    p.add_argument("--out", default=None, help=f"summary JSON (default benchmarks/results/{BENCHMARK}.json)")
    args = p.parse_args(list(argv))
    if args.smoke:
        p.set_defaults(**SMOKE, out=str(Path(tempfile.gettempdir()) / "das_recipe_tuning_smoke" / f"{BENCHMARK}.json"))
        args = p.parse_args(list(argv))
    args.out = args.out or f"benchmarks/results/{BENCHMARK}.json"
    return args


# --------------------------------------------------------------------------- the pairs


@dataclass(frozen=True)
class Protocol:
    """One pair's protocol: what its runs share.

    Attributes:
        name: R1 or R2.
        trainer: ``train.py`` (Lightning, the teacher run on every batch) or ``population`` (cached views).
        teacher, teacher_checkpoint: the teacher spec and its weights.
        students: the student specs (a network name or an ArchSpec JSON).
        image_size: None for the files' own 32×32.
        train_images, epochs: the full schedule: E epochs on I training images.
        views: the population trainer's cached views (R2); 1 for train.py, which augments live.
        tune_images: tune.train_images (I_t), also the short runs'.
    """

    name: str
    trainer: str
    teacher: str
    teacher_checkpoint: str
    students: tuple[str, ...]
    image_size: int | None
    train_images: int
    epochs: int
    views: int
    tune_images: int

    @property
    def evidence(self) -> tuple[str, ...]:
        return EVIDENCE[self.name]


def trials_by_rule(epochs: int, images: int, tune_epochs: int, tune_images: int, budget: float) -> int:
    """The budget rule: N × E_t × I_t ≤ budget × E × I training image passes (see the module docstring)."""
    return math.floor(budget * epochs * images / (tune_epochs * min(tune_images, images)) + 1e-9)


def parse_slice(text: str, n: int, flag: str = "--r2-only") -> tuple[int, int]:
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise DasError(f"{flag} {text!r} must be two positions A:B such as 6:14") from None
    if not 0 <= start < stop <= n:
        raise DasError(f"{flag} {text!r} must satisfy 0 <= A < B <= {n} (the students of the sample)")
    return start, stop


def r2_students(path: Path, only: str, pair: str = "R2") -> tuple[str, ...]:
    """The sample's students at positions A..B-1 of its training order (distill_ground_truth's spread order), as ArchSpec JSON."""
    flag = f"--{pair.lower()}"
    try:
        keys = [s["key"] for s in json.loads(path.read_text())["students"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DasError(f"{flag}-students {path} is not a sample file (distill_ground_truth's .students.json, with a students list)") from None
    start, stop = parse_slice(only, len(keys), f"{flag}-only")
    return tuple(keys[i] for i in spread_order(len(keys))[start:stop])


def check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Every argument checked before any data is read; the parsed lists."""
    parts = parse_list(args.parts, "parts")
    if bad := [x for x in parts if x not in PARTS]:
        raise DasError(f"--parts: unknown {bad}; choose from {', '.join(PARTS)}")
    pairs = parse_list(args.pairs, "pairs")
    if bad := [x for x in pairs if x not in PAIRS]:
        raise DasError(f"--pairs: unknown {bad}; choose from {', '.join(PAIRS)}")
    seeds, fid_seeds = parse_list(args.seeds, "seeds", int), parse_list(args.fidelity_seeds, "fidelity-seeds", int)
    fid_epochs = parse_list(args.fidelity_epochs, "fidelity-epochs", int)
    known = [*RECIPES, *STUDIES]
    recipes = known if args.recipes is None else parse_list(args.recipes, "recipes")
    if bad := [x for x in recipes if x not in known]:
        raise DasError(f"--recipes: unknown {bad}; choose from {', '.join(known)}")
    losses = parse_list(args.logit_losses, "logit-losses")
    if bad := [x for x in losses if x not in logit_losses()]:
        raise DasError(f"--logit-losses: {bad} are not registered logit losses; choose from {', '.join(logit_losses())}")
    for key in ("r1_train_images", "r2_train_images", "val_images", "r1_epochs", "r2_epochs", "tune_epochs", "v2_tune_epochs", "batch_size",
                "r2_views", "r2_image_size"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    for key in ("r1_tune_images", "r2_tune_images"):
        if getattr(args, key) < 2:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 2 (tune.train_images)")
    if min(fid_epochs) < 1:
        raise DasError(f"--fidelity-epochs {args.fidelity_epochs!r}: every schedule needs at least 1 epoch")
    if args.test_images < 0 or args.lr <= 0 or args.warmup_epochs < 0 or args.budget <= 0:
        raise DasError("--test-images must be >= 0 (0: all), --lr and --budget > 0, --warmup-epochs >= 0")
    if args.trials is not None and args.trials < 1:
        raise DasError(f"--trials {args.trials} must be at least 1 (or leave it out for the budget rule's)")
    for flag in ("train_file", "test_file", *(f"{'r1' if pair == 'R1' else 'r2'}_teacher_checkpoint" for pair in pairs)):
        require_file(getattr(args, flag), f"--{flag.replace('_', '-')}", "an existing file (see --help)")
    if "R2" in pairs:
        require_file(args.r2_students, "--r2-students", "distill_ground_truth's .students.json of the NB201 population")
    if "R3" in pairs:
        require_file(args.r3_students, "--r3-students", "distill_ground_truth's .students.json of the resnet_cifar population")
    return {"parts": parts, "pairs": pairs, "seeds": seeds, "fidelity_seeds": fid_seeds, "fidelity_epochs": fid_epochs,
            "recipes": recipes, "logit_losses": losses}


def protocols(args: argparse.Namespace, pairs: list[str]) -> dict[str, Protocol]:
    """The pairs in the order asked for."""
    made = {
        "R1": lambda: Protocol("R1", "train.py", args.r1_teacher, args.r1_teacher_checkpoint, (args.r1_student,), None, args.r1_train_images,
                               args.r1_epochs, 1, args.r1_tune_images),
        "R2": lambda: Protocol("R2", "population", args.r2_teacher, args.r2_teacher_checkpoint, r2_students(Path(args.r2_students), args.r2_only),
                               None if args.r2_image_size == 32 else args.r2_image_size, args.r2_train_images, args.r2_epochs,
                               args.r2_views, args.r2_tune_images),
        # R2's protocol and teacher on resnet_cifar students (population C) that no recipe study had seen.
        "R3": lambda: Protocol("R3", "population", args.r2_teacher, args.r2_teacher_checkpoint,
                               r2_students(Path(args.r3_students), args.r3_only, "R3"), None if args.r2_image_size == 32 else args.r2_image_size,
                               args.r2_train_images, args.r2_epochs, args.r2_views, args.r2_tune_images),
    }
    return {name: made[name]() for name in pairs}


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Unit:
    """One run: a final run (``epochs`` the full schedule's) or a short run judged on validation."""

    kind: str  # final or short
    recipe: str
    seed: int
    student: str
    epochs: int

    @property
    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "recipe": self.recipe, "seed": self.seed, "student": self.student, "epochs": self.epochs}


def plan(p: Protocol, parts: list[str], recipes: list[str], seeds: list[int], fid_seeds: list[int], fid_epochs: list[int]) -> list[Unit]:
    """Seed-major: a run cut short holds every comparison at its first seed first; R2 student-major within a seed."""
    units: list[Unit] = []
    fidelity = [r for r in FIDELITY if r in recipes] if "fidelity" in parts and p.name in FIRST_PAIRS else []
    for seed in [*seeds, *(s for s in fid_seeds if s not in seeds)]:
        fid = fidelity if seed in fid_seeds else []
        finals = [r for r in p.evidence if r in recipes] if "evidence" in parts and seed in seeds else []
        finals += [r for r in fid if r not in finals]
        for student in p.students:
            units += [Unit("short", r, seed, student, e) for e in fid_epochs for r in fid]
            units += [Unit("final", r, seed, student, p.epochs) for r in finals]
    return units


#: A study's size: its trials and tune.epochs, by recipe (TUNED, TUNED_V2, TUNED_V3).
Studies = dict[str, tuple[int, int]]


def definition(recipe: str, studies: Studies, tune_images: int, losses: list[str]) -> dict[str, Any]:
    """What a record of ``recipe`` was made with (a record made otherwise is refused, not mixed)."""
    if recipe in STUDIES:
        trials, epochs = studies[recipe]
        tune = {"trials": trials, "epochs": epochs, "train_images": tune_images, "logit_losses": losses}
        return {"tune": {**tune, **STUDY_SETTINGS[recipe]}}
    return RECIPES[recipe]


def model_recipe(recipe: str, lr: float) -> dict[str, Any]:
    """A fixed recipe as train.py's model settings: losses, feature_pairs and the learning rate."""
    r = RECIPES[recipe]
    return {"losses": copy.deepcopy(r["losses"]), "feature_pairs": r.get("feature_pairs", DEFAULT_FEATURE_PAIRS),
            "lr": lr * r.get("lr_factor", 1.0)}


def work_dir(out: Path) -> Path:
    """train.py's run directories and the data subsets: ``OUT.json.work/``."""
    return out.with_name(out.name + ".work")


def student_dir(student: str) -> str:
    """A short, stable folder name for a student spec."""
    return student if student.isidentifier() else hashlib.sha256(student.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- running one pair


class PairRuns:
    """One pair's data, teacher, results file and runs."""

    def __init__(self, p: Protocol, args: argparse.Namespace, out: Path, studies: Studies, losses: list[str]) -> None:
        self.p, self.args, self.studies, self.losses = p, args, studies, losses
        self.work = work_dir(out) / p.name
        self.work.mkdir(parents=True, exist_ok=True)
        pool = p.train_images + args.val_images
        data_dir = out.with_name(out.name + ".work") / "data"
        self.train_file = subset_file(Path(args.train_file), pool, args.data_seed, data_dir)
        self.test_file = (subset_file(Path(args.test_file), args.test_images, args.data_seed, data_dir) if args.test_images
                          else Path(args.test_file))
        self.val_fraction = args.val_images / pool
        self.dm = DasDataModule(dataset="npz", train_file=str(self.train_file), test_file=str(self.test_file), image_size=p.image_size,
                                batch_size=args.batch_size, val_fraction=self.val_fraction, seed=args.data_seed)
        self.num_classes = self.dm.num_classes
        self.sizes = {split: self.dm.split_size(split) for split in ("train", "val", "test")}
        self.teacher = build_model(p.teacher, self.num_classes, checkpoint=p.teacher_checkpoint)
        self.optim = OptimConfig(lr=args.lr, warmup_epochs=args.warmup_epochs)
        settings = {"benchmark": BENCHMARK, "pair": p.name, "trainer": p.trainer, "teacher": p.teacher,
                    "teacher_checkpoint": Path(p.teacher_checkpoint).name, "teacher_weights": weights_digest(self.teacher),
                    "students": list(p.students), "train_file": Path(args.train_file).name, "test_file": Path(args.test_file).name,
                    "test_images": args.test_images, "train_images": p.train_images, "val_images": args.val_images, "data_seed": args.data_seed,
                    "image_size": p.image_size, "epochs": p.epochs, "batch_size": args.batch_size, "lr": args.lr,
                    "warmup_epochs": args.warmup_epochs, "views": p.views, "tune_images": p.tune_images, "channels_last": True}
        self.runs = ResultsFile(runs_path(out, p.name), settings)
        self._final_cache: tuple[int, TeacherCache] | None = None
        self._short: tuple[int, ShortRuns] | None = None

    # ---- bookkeeping

    def find(self, unit: Unit) -> dict[str, Any] | None:
        """The unit's record, refused when it was made with another definition of its recipe."""
        found = self.runs.find(**unit.key)
        wanted = json.loads(json.dumps(definition(unit.recipe, self.studies, self.p.tune_images, self.losses)))
        if found is not None and found.get("definition") != wanted:
            raise DasError(f"{self.runs.path} holds {unit.recipe} (seed {unit.seed}) made as {found.get('definition')}, not as {wanted}; "
                           "rerun with the file's settings or choose another --out")
        return found

    def teacher_record(self) -> dict[str, Any]:
        found = self.runs.find(kind="teacher")
        if found is None:
            started = time.perf_counter()
            data = PopulationData(self.dm.subset("train"), self.dm.subset("test"), self.dm.mean, self.dm.std, self.num_classes)
            found = {"kind": "teacher", "test_acc": evaluate(self.teacher, data), "test_images": self.sizes["test"],
                     "seconds": time.perf_counter() - started, "date": now_iso()}
            self.runs.add(found)
        return found

    def run(self, unit: Unit) -> dict[str, Any]:
        if unit.kind == "short":
            record = self.short(unit)
        elif self.p.trainer == "train.py":
            record = self.train_py(unit)
        else:
            record = self.population(unit)
        record = {**unit.key, **record, "definition": definition(unit.recipe, self.studies, self.p.tune_images, self.losses),
                  "threads": torch.get_num_threads(), "date": now_iso()}
        self.runs.add(record)
        return record

    # ---- train.py (R1's final runs; R2's studies)

    def train_argv(self, unit: Unit, root: Path, tune_only: bool = False) -> list[str]:
        """train.py's command for ``unit``: the protocol's settings, the recipe's model settings, and for ``tuned`` the study."""
        p, a = self.p, self.args
        size = p.image_size or 32
        tuned = unit.recipe in STUDIES
        teacher = tuned or RECIPES[unit.recipe].get("teacher", p.teacher) is not None
        model = model_recipe("default" if tuned else unit.recipe, a.lr)
        argv = ["--model.student", unit.student,
                "--model.teacher", p.teacher if teacher else "null", "--model.teacher_checkpoint", p.teacher_checkpoint if teacher else "null",
                "--model.losses", json.dumps(model["losses"]), "--model.feature_pairs", model["feature_pairs"], "--model.lr", repr(model["lr"]),
                "--model.warmup_epochs", repr(a.warmup_epochs), "--model.channels_last", "true", "--model.input_size", f"[3, {size}, {size}]",
                "--data.dataset", "npz", "--data.train_file", str(self.train_file), "--data.test_file", str(self.test_file),
                "--data.image_size", str(p.image_size) if p.image_size else "null", "--data.batch_size", str(a.batch_size),
                "--data.val_fraction", repr(self.val_fraction), "--data.seed", str(a.data_seed),
                "--trainer.max_epochs", str(p.epochs), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", str(not a.no_progress).lower(),
                "--trainer.enable_model_summary", "false", "--seed_everything", str(unit.seed), "--baseline", "false"]
        if tuned:  # the study, from the default recipe (its first trial) over train.py's default ranges
            trials, epochs = self.studies[unit.recipe]
            argv += ["--tune.trials", str(trials), "--tune.epochs", str(epochs), "--tune.train_images", str(p.tune_images),
                     "--tune.seed", str(unit.seed), "--tune.logit_losses", json.dumps(self.losses)]
            if unit.recipe == TUNED:  # the study as first shipped, which every record was made with: the guard is replayed
                argv += ["--tune.switch_z", "0", "--tune.pruner", "median", "--tune.anchors", "null"]
            else:  # the tuner v2 (v3) as it would ship: anchors, (refinements,) no pruning, the guard on
                v = STUDY_SETTINGS[unit.recipe]
                argv += ["--tune.anchors", json.dumps(v["anchors"]), "--tune.pruner", v["pruner"], "--tune.switch_z", repr(v["switch_z"]),
                         "--tune.refine", str(v.get("refine", 0))]
            if tune_only:
                argv += ["--tune.only", "true"]
        return argv

    def call_train_py(self, argv: list[str]) -> float:
        started = time.perf_counter()
        if train_command.main(argv) != 0:  # train.py returns 130 when Ctrl-C stopped a fit (everything recorded is kept)
            raise KeyboardInterrupt
        return time.perf_counter() - started

    def fresh_root(self, unit: Unit) -> Path:
        """The run's directory, emptied, except a tuned run's study (its finished trials are kept and the study goes on)."""
        root = self.work / f"{unit.recipe}-seed{unit.seed}-{student_dir(unit.student)}"
        if root.is_dir():
            for item in root.iterdir():
                if not (unit.recipe in STUDIES and item.name == "tune"):
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        return root

    def train_py(self, unit: Unit) -> dict[str, Any]:
        root = self.fresh_root(unit)
        tuned = unit.recipe in STUDIES
        wall = self.call_train_py(self.train_argv(unit, root))
        results = json.loads((root / "results.json").read_text())
        record = {"test_acc": results["distilled_test_acc"], "seconds": wall, "test_images": results["test_images"]}
        if tuned:
            t = results["tune"]
            record["tune"] = {"recipe": t["recipe"], "val_acc": t["val_acc"], "trial": t["trial"], "trials": t["trials"],
                              "fallback": t["fallback"], "seconds": t["seconds"], "final_seconds": t["final_run_seconds"],
                              "configured_trial": t.get("configured_trial"), "configured_val_acc": t.get("configured_val_acc"),
                              "val_images": t.get("val_images"), "kept": t.get("kept")}
        return record

    # ---- the population trainer (R2's final runs)

    def final_cache(self, seed: int) -> tuple[TeacherCache, PopulationData]:
        """The protocol's teacher cache (every training view, every map a recipe reads) for ``seed``: one at a time, built once."""
        data = PopulationData.from_datamodule(self.dm)
        if self._final_cache is None or self._final_cache[0] != seed:
            self._final_cache = None
            started = time.perf_counter()
            points = feature_points(self.teacher, data.normalise(data.train.images[:2]))
            modules = list(dict.fromkeys([*cached_modules("stages", points), *cached_modules("final", points)]))
            cache = build_teacher_cache(self.teacher, data, modules, AUGMENT, self.p.views, seed, spill_dir=self.work)
            print(f"{self.p.name}: teacher cache for seed {seed}: {len(cache)} images × {cache.num_views} views, {cache.nbytes / 1e6:.0f} MB "
                  f"{cache.where}, built in {time.perf_counter() - started:.0f} s", flush=True)
            self._final_cache = (seed, cache)
        return self._final_cache[1], data

    def population(self, unit: Unit) -> dict[str, Any]:
        p, a = self.p, self.args
        record: dict[str, Any] = {}
        if unit.recipe in STUDIES:
            root = self.work / f"{unit.recipe}-seed{unit.seed}-{student_dir(unit.student)}"
            wall = self.call_train_py(self.train_argv(unit, root, tune_only=True))
            best = json.loads((root / "tune" / "best.json").read_text())
            chosen = best["recipe"]
            record["tune"] = {"recipe": chosen, "val_acc": best["val_acc"], "trial": best["trial"], "trials": best["trials"],
                              "fallback": best["fallback"], "seconds": best["seconds"], "wall_seconds": wall,
                              "configured_trial": best.get("configured_trial"), "configured_val_acc": best.get("configured_val_acc"),
                              "val_images": best.get("val_images"), "kept": best.get("kept")}
        else:
            chosen = model_recipe("default" if unit.recipe == "alone" else unit.recipe, a.lr)
        recipe = Recipe(epochs=p.epochs, batch_size=a.batch_size, losses=chosen["losses"], feature_pairs=chosen["feature_pairs"],
                        optim=dataclasses.replace(self.optim, lr=chosen["lr"]), augment=AUGMENT, views=p.views)
        cache, data = self.final_cache(unit.seed)
        student = init_student(lambda: build_model(unit.student, self.num_classes), unit.seed)
        run = StudentRun(student, cache, data, recipe, unit.seed, unit.recipe != "alone", "cpu", CHANNELS_LAST)
        run.train_epochs(p.epochs)
        result = run.result()
        record.update(test_acc=result.acc, seconds=result.seconds, diverged=result.diverged, init_digest=result.init_digest)
        if unit.recipe in STUDIES:
            record["tune"]["final_seconds"] = result.seconds
        return record

    def close(self) -> None:
        """Free the teacher caches (R2's holds every view: 1.4 GB at full size) once the pair's runs are done."""
        self._final_cache = self._short = None

    # ---- short runs: the study's trials, for fixed recipes

    def short_runs(self, seed: int) -> ShortRuns:
        """The trials' trainer at ``seed`` (tune.seed): its training subset, validation split and teacher cache, built once."""
        if self._short is None or self._short[0] != seed:
            cfg = TuneConfig(trials=1, epochs=self.args.tune_epochs, train_images=self.p.tune_images, seed=seed)
            example = build_model(self.p.students[0], self.num_classes)
            self._short = (seed, ShortRuns(example, self.teacher, self.dm, cfg, self.optim, self.p.epochs, DEFAULT_FEATURE_PAIRS, True,
                                           "cpu", self.work))
        return self._short[1]

    def short(self, unit: Unit) -> dict[str, Any]:
        """``unit.recipe`` trained as the study's trials are (das.tune.trials) for ``unit.epochs`` epochs, judged on the validation split."""
        runs = self.short_runs(unit.seed)
        chosen = model_recipe(unit.recipe, self.args.lr)
        recipe = dataclasses.replace(runs.recipe(chosen), epochs=unit.epochs,
                                     optim=short_schedule(runs.optim, chosen["lr"], unit.epochs, runs.max_epochs))
        student = init_student(lambda: build_model(unit.student, self.num_classes), unit.seed)
        run = StudentRun(student, runs.cache, runs.population, recipe, unit.seed, True, "cpu", CHANNELS_LAST)
        run.train_epochs(unit.epochs)
        return {"val_acc": run.evaluate(), "seconds": run.seconds, "diverged": run.diverged, "val_images": len(runs.population.test),
                "train_images_used": len(runs.population.train)}


# --------------------------------------------------------------------------- expected time


def passes(unit: Unit, p: Protocol, studies: Studies) -> dict[str, float]:
    """Training image passes of ``unit`` by the speed they run at: ``final`` (the protocol's trainer) and ``short`` (trials)."""
    if unit.kind == "short":
        return {"short": unit.epochs * min(p.tune_images, p.train_images)}
    out = {"final": float(unit.epochs * p.train_images)}
    if unit.recipe in STUDIES:
        trials, tune_epochs = studies[unit.recipe]
        out["short"] = float(trials * tune_epochs * min(p.tune_images, p.train_images))
    return out


def speeds(records: list[dict[str, Any]], p: Protocol) -> dict[str, tuple[float, bool]]:
    """Images per second of final and short runs, measured on this pair's finished runs where there are any (else the prior)."""
    done: dict[str, list[float]] = {"final": [0.0, 0.0], "short": [0.0, 0.0]}
    for r in records:
        if r.get("kind") not in ("final", "short"):
            continue
        unit = Unit(r["kind"], r["recipe"], r["seed"], r["student"], r["epochs"])
        tune = r.get("definition", {}).get("tune")
        work = passes(unit, p, {unit.recipe: (tune["trials"], tune["epochs"])} if tune else {})
        if r["recipe"] in STUDIES:  # the study and the final run timed apart
            done["short"][0] += work["short"]
            done["short"][1] += r["tune"]["seconds"]
            done["final"][0] += work["final"]
            done["final"][1] += r["tune"]["final_seconds"]
        else:
            kind = "short" if r["kind"] == "short" else "final"
            done[kind][0] += work[kind]
            done[kind][1] += r["seconds"]
    return {k: (n / s, True) if s > 0 else (PRIOR_SPEED[(p.name, k)], False) for k, (n, s) in done.items()}


def estimate(todo: list[Unit], p: Protocol, speed: dict[str, tuple[float, bool]], studies: Studies) -> tuple[float, str]:
    """Seconds expected for ``todo``, and how the speeds were known."""
    totals = {"final": 0.0, "short": 0.0}
    for unit in todo:
        for kind, n in passes(unit, p, studies).items():
            totals[kind] += n
    seconds = sum(totals[k] / speed[k][0] for k in totals)
    said = ", ".join(f"{totals[k]:,.0f} {k} image passes at {speed[k][0]:.0f} img/s ({'measured' if speed[k][1] else 'prior'})"
                     for k in totals if totals[k])
    if p.trainer == "population" and totals["final"]:
        said += ", plus a teacher cache of every view per seed"
    return seconds, said


# --------------------------------------------------------------------------- the summary


def final_cells(records: list[dict[str, Any]], recipe: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(student, seed) -> the final run's record of ``recipe``."""
    return {(r["student"], r["seed"]): r for r in records if r.get("kind") == "final" and r["recipe"] == recipe}


def short_cells(records: list[dict[str, Any]], recipe: str, epochs: int) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["student"], r["seed"]): r for r in records if r.get("kind") == "short" and r["recipe"] == recipe and r["epochs"] == epochs}


def seed_means(values: dict[tuple[str, int], float]) -> dict[int, float]:
    """Each seed's mean over its students."""
    seeds = sorted({seed for _, seed in values})
    return {s: statistics.fmean(v for (_, seed), v in values.items() if seed == s) for s in seeds}


def row(records: list[dict[str, Any]], recipe: str, alone: dict[tuple[str, int], float]) -> dict[str, Any]:
    """A recipe's test accuracy (mean over its runs; std of the seeds' means) and its gain over alone on the same cells."""
    accs = {k: r["test_acc"] for k, r in final_cells(records, recipe).items()}
    per_seed = seed_means(accs)
    gains = [accs[k] - alone[k] for k in accs if k in alone]
    return {"n": len(accs), "test_acc": {"mean": statistics.fmean(accs.values()) if accs else None,
                                         "std": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None,
                                         "per_seed": {str(s): v for s, v in per_seed.items()}},
            "gain_over_alone": statistics.fmean(gains) if gains else None, "gain_runs": len(gains)}


def difference(records: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Mean test accuracy of ``a`` minus ``b`` over the (student, seed) cells both hold."""
    ca, cb = final_cells(records, a), final_cells(records, b)
    common = sorted(set(ca) & set(cb))
    diffs = [ca[k]["test_acc"] - cb[k]["test_acc"] for k in common]
    return {"difference": statistics.fmean(diffs) if diffs else None, "n": len(diffs),
            a: statistics.fmean(ca[k]["test_acc"] for k in common) if common else None,
            b: statistics.fmean(cb[k]["test_acc"] for k in common) if common else None}


def configured_trial(record: dict[str, Any], study_dir: Path, val_images: int) -> tuple[int | None, float | None, int]:
    """A tuned run's configured-recipe trial: its number, its validation accuracy and the images it was judged on.

    From the record; for a record made before the study reported them, from the study's
    ``trials.csv`` in the work folder (Nones when that is gone).
    """
    t = record["tune"]
    if t.get("configured_val_acc") is not None:
        return t["configured_trial"], float(t["configured_val_acc"]), int(t["val_images"])
    path = study_dir / "trials.csv"
    if not path.is_file():
        return None, None, val_images
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["configured"] == "True" and r["outcome"] == "complete"]
    return (int(rows[0]["trial"]), float(rows[0]["val_acc"]), val_images) if rows else (None, None, val_images)


def guard_replay(records: list[dict[str, Any]], work: Path, val_images: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The switching guard (docs/decisions.md) replayed on each tuned run: its decisions, and GUARDED final records.

    A run whose study the guard would keep on the configured recipe takes the test accuracy of the
    ``default`` run of the same student and seed (the same recipe, initial weights and batch order);
    a run whose best trial beats it by more than the margin keeps its own. A cell without its default
    run or its configured trial is left out.
    """
    defaults = final_cells(records, "default")
    decisions, guarded = [], []
    for (student, seed), r in sorted(final_cells(records, TUNED).items()):
        number, conf, n = configured_trial(r, work / f"{TUNED}-seed{seed}-{student_dir(student)}" / "tune", val_images)
        best = r["tune"]["val_acc"]
        if conf is None or (student, seed) not in defaults or best is None:
            continue
        margin = switch_margin(best, conf, n, GUARD_Z)
        kept = best - conf <= margin
        decisions.append({"student": student, "seed": seed, "best_val_acc": best, "configured_val_acc": conf, "val_images": n,
                          "margin": margin, "kept_configured": kept, "study_chose_configured": r["tune"]["trial"] == number,
                          "tuned_test_acc": r["test_acc"], "default_test_acc": defaults[(student, seed)]["test_acc"]})
        source = defaults[(student, seed)] if kept else r
        guarded.append({"kind": "final", "recipe": GUARDED, "student": student, "seed": seed, "test_acc": source["test_acc"]})
    return decisions, guarded


def reference_recipe(records: list[dict[str, Any]], pair: str) -> str:
    """The fixed recipe a pair's tuned recipes are held against: R1 s400, R2 default; R3 the better of R3_FIXED on the cells all hold."""
    if REFERENCE[pair] is not None:
        return REFERENCE[pair]
    cells = [final_cells(records, r) for r in R3_FIXED]
    common = set.intersection(*(set(c) for c in cells))
    if not common:
        return R3_FIXED[0]
    means = [statistics.fmean(c[k]["test_acc"] for k in common) for c in cells]
    return R3_FIXED[max(range(len(means)), key=lambda i: (means[i], -i))]


def tuning_summary(records: list[dict[str, Any]], recipe: str, reference: str, tolerance: float) -> dict[str, Any]:
    """One study recipe's cost (multiples of its final run), its choices, and its goals against ``reference``."""
    tuned = final_cells(records, recipe)
    costs = [r["tune"]["seconds"] / r["tune"]["final_seconds"] for r in tuned.values()]
    out: dict[str, Any] = {
        "cost_in_final_runs": {"mean": statistics.fmean(costs) if costs else None, "max": max(costs, default=None), "values": costs},
        "seconds": {"tuning": sum(r["tune"]["seconds"] for r in tuned.values()),
                    "final_runs": sum(r["tune"]["final_seconds"] for r in tuned.values())},
        "chosen": [{"student": k[0], "seed": k[1], "recipe": r["tune"]["recipe"], "val_acc": r["tune"]["val_acc"], "trials": r["tune"]["trials"],
                    "fallback": r["tune"]["fallback"], "kept": r["tune"].get("kept")} for k, r in sorted(tuned.items())]}
    goal = difference(records, recipe, reference)
    goal.update(rule=f"{recipe} >= {reference} - {tolerance} point (test accuracy, the cells both hold)",
                met=None if goal["difference"] is None else goal["difference"] >= -tolerance - 1e-9)
    cost = out["cost_in_final_runs"]["mean"]
    out["goals"] = {"accuracy": goal, "cost": {"rule": f"tuning <= {COST_GOAL:g}x one final run's seconds (mean over {recipe} runs)",
                                               "mean": cost, "met": None if cost is None else cost <= COST_GOAL}}
    return out


def configured_replay(records: list[dict[str, Any]], recipe: str, lr: float) -> dict[str, Any]:
    """``recipe``'s mean test accuracy with each run whose study chose the default recipe replaced by the ``default`` run.

    Such a final run is the default run's training, except where the two ran under other thread
    counts (float rounding then moves a student by a point or two): the replay removes that noise
    from the comparison with the default, as the guard's replay does.
    """
    defaults = final_cells(records, "default")
    configured = json.loads(json.dumps(model_recipe("default", lr)))
    accs, same, noise = [], 0, []
    for key, r in sorted(final_cells(records, recipe).items()):
        chosen = {k: r["tune"]["recipe"].get(k) for k in ("losses", "feature_pairs", "lr")}
        if key in defaults and chosen == configured:
            same += 1
            noise.append(r["test_acc"] - defaults[key]["test_acc"])
            accs.append(defaults[key]["test_acc"])
        else:
            accs.append(r["test_acc"])
    return {"mean": statistics.fmean(accs) if accs else None, "runs": len(accs), "chose_default": same,
            "own_minus_default_where_same": {"mean": statistics.fmean(noise) if noise else None, "min": min(noise, default=None),
                                             "max": max(noise, default=None)}}


def evidence_summary(records: list[dict[str, Any]], pair: str, work: Path | None = None, val_images: int = 0,
                     lr: float | None = None) -> dict[str, Any]:
    alone = {k: r["test_acc"] for k, r in final_cells(records, "alone").items()}
    decisions, guarded = guard_replay(records, work, val_images) if work is not None else ([], [])
    records = [*records, *guarded]
    rows = {name: row(records, name, alone) for name in (*EVIDENCE[pair], GUARDED) if final_cells(records, name)}
    ref = reference_recipe(records, pair)
    out: dict[str, Any] = {"rows": rows, "reference": ref}
    tuning = tuning_summary(records, TUNED, ref, TOLERANCE[pair])
    out["goals"] = tuning.pop("goals")
    out["tuning"] = tuning
    if final_cells(records, TUNED_V2):
        out["tuning_v2"] = tuning_summary(records, TUNED_V2, ref, TOLERANCE[pair])
        out["tuning_v2"]["kept_configured"] = sum(c["kept"] is not None for c in out["tuning_v2"]["chosen"])
        out["tuning_v2"]["minus_default"] = difference(records, TUNED_V2, "default")
        if final_cells(records, GUARDED):
            out["tuning_v2"]["minus_tuned_guarded"] = difference(records, TUNED_V2, GUARDED)
        if lr is not None:
            out["tuning_v2"]["default_replayed"] = configured_replay(records, TUNED_V2, lr)
    if final_cells(records, TUNED_V3):
        out["tuning_v3"] = tuning_summary(records, TUNED_V3, ref, TOLERANCE[pair])
        out["tuning_v3"]["kept_configured"] = sum(c["kept"] is not None for c in out["tuning_v3"]["chosen"])
        out["tuning_v3"]["minus_default"] = difference(records, TUNED_V3, "default")
        out["tuning_v3"]["minus_tuned_v2"] = difference(records, TUNED_V3, TUNED_V2)
        if lr is not None:
            out["tuning_v3"]["default_replayed"] = configured_replay(records, TUNED_V3, lr)
    if decisions:
        reference = difference(records, GUARDED, ref)
        reference.update(met=None if reference["difference"] is None else reference["difference"] >= -TOLERANCE[pair] - 1e-9)
        # The replay's premise, checked where the study itself chose the configured recipe: that tuned run is the default run.
        same = [abs(d["tuned_test_acc"] - d["default_test_acc"]) for d in decisions if d["study_chose_configured"]]
        out["guard"] = {"z": GUARD_Z, "kept_configured": sum(d["kept_configured"] for d in decisions), "runs": len(decisions),
                        "premise": {"runs": len(same), "max_abs_difference": max(same, default=None),
                                    "rule": "a tuned run whose study chose the configured recipe has the default run's test accuracy"},
                        "guarded_minus_tuned": difference(records, GUARDED, TUNED), "accuracy_goal": reference, "decisions": decisions}
    if "dkd_b8" in EVIDENCE[pair]:
        out["dkd_beside_kd"] = {name: difference(records, name, "kd") for name in ("dkd_b8", "dkd_b2")}
    return out


def guard_verdict(pairs: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """docs/decisions.md's rule: the guard becomes the default if on R1 and R2, both seeds, guarded >= tuned − GUARD_COST."""
    each = {}
    for name in FIRST_PAIRS:
        guard = pairs.get(name, {}).get("evidence", {}).get("guard")
        if guard is not None:
            d = guard["guarded_minus_tuned"]
            each[name] = {"difference": d["difference"], "runs": d["n"], "complete": d["n"] == len(pairs[name]["students"]) * len(seeds)}
    complete = all(name in each and each[name]["complete"] for name in FIRST_PAIRS)
    verdict = all(each[n]["difference"] >= -GUARD_COST - 1e-9 for n in FIRST_PAIRS) if complete else None
    return {"rule": f"tune.switch_z {GUARD_Z} becomes the default if on every pair, over seeds {list(seeds)}, guarded - tuned "
                    f">= -{GUARD_COST} point (mean test accuracy)", "pairs": each, "default": verdict}


def tuner_pairs(pairs: dict[str, Any], seeds: Sequence[int], key: str, against: Callable[[str], str],
                max_cost: float) -> tuple[dict[str, Any], bool | None]:
    """Each pair's difference of a tuner's runs (``key``, e.g. ``tuning_v2``) against ``against(pair)`` (``minus_<recipe>``)
    and its cost; the verdict: every difference ≥ −``max_cost`` and every cost ≤ COST_GOAL, None until every pair holds every cell."""
    each: dict[str, Any] = {}
    for name in PAIRS:
        entry = pairs.get(name, {})
        tuner = entry.get("evidence", {}).get(key)
        if tuner is None:
            continue
        d = tuner.get(f"minus_{against(name)}", {"difference": None, "n": 0})
        each[name] = {"against": against(name), "difference": d["difference"], "runs": d["n"], "cost": tuner["cost_in_final_runs"]["mean"],
                      "complete": d["n"] == len(entry["students"]) * len(seeds)}
    complete = all(name in each and each[name]["complete"] for name in PAIRS)
    verdict = all(each[n]["difference"] >= -max_cost - 1e-9 and each[n]["cost"] <= COST_GOAL for n in PAIRS) if complete else None
    return each, verdict


def v2_verdict(pairs: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """docs/decisions.md's rule for the tuner v2, over both seeds: its settings become train.py's defaults if

    on R3 (unseen) tuned_v2 − default ≥ −V2_COST, on R1 and R2 tuned_v2 − tuned_guarded ≥ −V2_COST, and its cost
    is at most COST_GOAL final runs on every pair. None until every pair holds every cell.
    """
    each, verdict = tuner_pairs(pairs, seeds, "tuning_v2", lambda name: "default" if name == "R3" else GUARDED, V2_COST)
    return {"rule": f"the tuner v2's settings ({V2}, tune.epochs 5) become train.py's defaults if over seeds {list(seeds)} "
                    f"R3 tuned_v2 - default >= -{V2_COST}, R1 and R2 tuned_v2 - {GUARDED} >= -{V2_COST} point (mean test accuracy), "
                    f"and its cost <= {COST_GOAL:g}x a final run on every pair", "pairs": each, "default": verdict}


def v3_verdict(pairs: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """docs/decisions.md's rule for the tuner v3, over both seeds: tune.refine 4 becomes train.py's default if on
    R1, R2 and R3 tuned_v3 − tuned_v2 ≥ −V3_COST and its cost is at most COST_GOAL final runs. None until every pair holds every cell.
    """
    each, verdict = tuner_pairs(pairs, seeds, "tuning_v3", lambda name: TUNED_V2, V3_COST)
    return {"rule": f"tune.refine {V3['refine']} becomes train.py's default if over seeds {list(seeds)} on every pair "
                    f"tuned_v3 - tuned_v2 >= -{V3_COST} point (mean test accuracy) and its cost <= {COST_GOAL:g}x a final run",
            "pairs": each, "default": verdict}


def fidelity_summary(records: list[dict[str, Any]], recipes: Sequence[str], epochs: Sequence[int], seeds: Sequence[int],
                     tolerance: float) -> dict[str, Any]:
    """Per short schedule: the recipes' mean validation accuracy short, mean test accuracy full, ρ, the regret.

    Means are over the (student, seed) cells every compared recipe holds at both schedules; when
    no cell is common to all, the recipe with the fewest cells is left out until one is.
    """
    out = {}
    for e in epochs:
        short = {r: {k: v["val_acc"] for k, v in short_cells(records, r, e).items() if k[1] in seeds} for r in recipes}
        full = {r: {k: v["test_acc"] for k, v in final_cells(records, r).items() if k[1] in seeds} for r in recipes}
        both = {r: set(short[r]) & set(full[r]) for r in recipes}
        included = [r for r in recipes if both[r]]
        common: set = set.intersection(*(both[r] for r in included)) if included else set()
        while included and not common:
            included.remove(min(reversed(included), key=lambda r: len(both[r])))
            common = set.intersection(*(both[r] for r in included)) if included else set()
        s = [statistics.fmean(short[r][k] for k in common) for r in included]
        f = [statistics.fmean(full[r][k] for k in common) for r in included]
        entry: dict[str, Any] = {"epochs": e, "cells": len(common),
                                 "recipes": {r: {"short_val_acc": a, "full_test_acc": b} for r, a, b in zip(included, s, f)},
                                 "left_out": [r for r in recipes if r not in included], "rho": rho(s, f) if included else None}
        if included:
            best_short, best_full = max(range(len(s)), key=lambda i: (s[i], -i)), max(range(len(f)), key=lambda i: (f[i], -i))
            entry.update(best_short=included[best_short], best_full=included[best_full], regret=f[best_full] - f[best_short])
            # No ρ (fewer than 3 recipes, or a constant side) decides nothing.
            entry["safe"] = None if entry["rho"] is None else entry["rho"] >= SAFE_RHO and entry["regret"] <= tolerance + 1e-9
        else:
            entry.update(best_short=None, best_full=None, regret=None, safe=None)
        out[str(e)] = entry
    return out


def safe_epochs(fidelity: dict[str, dict[str, Any]], epochs: Sequence[int]) -> dict[str, bool | None]:
    """Per tune.epochs: safe on every pair measured (None while a pair has no verdict at it)."""
    verdicts = {}
    for e in epochs:
        each = [f.get(str(e), {}).get("safe") for f in fidelity.values()]
        verdicts[str(e)] = None if not each or any(v is None for v in each) else all(each)
    return verdicts


def runs_path(out: Path, pair: str) -> Path:
    """``OUT.<pair>.runs.jsonl`` beside the summary ``OUT``."""
    return out.with_name(out.name.removesuffix(".json") + f".{pair}.runs.jsonl")


def budget(trials: int, tune_epochs: int, tune_images: int, epochs: int, images: int) -> dict[str, Any]:
    """A study's size and its training image passes as a multiple of one final run's."""
    return {"trials": trials, "tune_epochs": tune_epochs, "tune_images": tune_images,
            "image_passes_multiple": trials * tune_epochs * min(tune_images, images) / (epochs * images)}


def summarise(out: Path, chosen: dict[str, Any], budgets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every pair with a runs file beside ``out``, this command's or not (read only: another process may be appending to it).

    So a command for one pair (``--pairs R2``), or two processes sharing ``--out``, leave a
    summary of everything recorded. A pair has an evidence entry once it has a final run of an
    evidence recipe, a fidelity entry once it has a short run (or this command runs them).
    """
    pairs: dict[str, Any] = {}
    recipes = list(FIDELITY)  # every recorded one, whatever this command's --recipes (a recipe without runs is left out)
    for name in PAIRS:
        settings, records = read_results(runs_path(out, name))
        if settings is None:
            continue
        teacher = next((r for r in records if r.get("kind") == "teacher"), {})
        made = {recipe: [r["definition"]["tune"] for r in records if r.get("recipe") == recipe] for recipe in STUDIES}
        entry: dict[str, Any] = {
            "teacher": {"spec": settings["teacher"], "checkpoint": settings["teacher_checkpoint"], "test_acc": teacher.get("test_acc"),
                        "test_images": teacher.get("test_images")},
            "students": settings["students"], "train_images": settings["train_images"], "val_images": settings["val_images"],
            "epochs": settings["epochs"],
            "budget": {**{recipe: budget(t[-1]["trials"], t[-1]["epochs"], t[-1]["train_images"], settings["epochs"], settings["train_images"])
                          for recipe, t in made.items() if t}, **budgets.get(name, {})}}
        if any(r.get("kind") == "final" and r["recipe"] in EVIDENCE[name] for r in records):
            entry["evidence"] = evidence_summary(records, name, work_dir(out) / name, settings["val_images"], settings["lr"])
        epochs = {r["epochs"] for r in records if r.get("kind") == "short"}
        if "fidelity" in chosen["parts"] and name in chosen["pairs"]:
            epochs |= set(chosen["fidelity_epochs"])
        if epochs and name in FIRST_PAIRS:
            entry["fidelity"] = fidelity_summary(records, recipes, sorted(epochs), chosen["fidelity_seeds"], TOLERANCE[name])
        pairs[name] = entry
    # This command's pairs first, in its order.
    result: dict[str, Any] = {"pairs": {n: pairs[n] for n in [*chosen["pairs"], *PAIRS] if n in pairs}}
    if any("guard" in e.get("evidence", {}) for e in result["pairs"].values()):
        result["switch_guard"] = guard_verdict(result["pairs"], chosen["seeds"])
    if any("tuning_v2" in e.get("evidence", {}) for e in result["pairs"].values()):
        result["tuner_v2"] = v2_verdict(result["pairs"], chosen["seeds"])
    if any("tuning_v3" in e.get("evidence", {}) for e in result["pairs"].values()):
        result["tuner_v3"] = v3_verdict(result["pairs"], chosen["seeds"])
    fidelity = {n: e["fidelity"] for n, e in result["pairs"].items() if "fidelity" in e}
    if fidelity:
        epochs = sorted({int(e) for f in fidelity.values() for e in f})
        result["safe_tune_epochs"] = {"rule": f"on every pair rho >= {SAFE_RHO} and regret <= the pair's tolerance {TOLERANCE}",
                                      "pairs": sorted(fidelity), "verdicts": safe_epochs(fidelity, epochs)}
    return result


def write_summary(path: Path, obj: dict[str, Any]) -> None:
    """Atomic, and safe when two processes share ``--out``: each writes its own temporary file (write_json shares one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=1) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    chosen = check_args(args)
    threads = set_threads(args.threads)
    out = Path(args.out)
    protos = protocols(args, chosen["pairs"])
    studies: dict[str, Studies] = {}
    for name, p in protos.items():
        studies[name] = {}
        for recipe, tune_epochs in ((TUNED, args.tune_epochs), (TUNED_V2, args.v2_tune_epochs), (TUNED_V3, args.v2_tune_epochs)):
            if recipe not in chosen["recipes"]:
                continue
            n = args.trials or trials_by_rule(p.epochs, p.train_images, tune_epochs, p.tune_images, args.budget)
            if n < 1:
                raise DasError(f"the budget rule gives {name}'s {recipe} no trial ({args.budget:g} × {p.epochs} epochs × {p.train_images} "
                               f"images < {tune_epochs} tune epochs × {p.tune_images} tune images); raise --budget or give --trials")
            studies[name][recipe] = (n, tune_epochs)
    started = time.perf_counter()
    pairs = {name: PairRuns(p, args, out, studies[name], chosen["logit_losses"]) for name, p in protos.items()}
    units = {name: plan(p, chosen["parts"], chosen["recipes"], chosen["seeds"], chosen["fidelity_seeds"], chosen["fidelity_epochs"])
             for name, p in protos.items()}
    teachers = {name: runs.teacher_record() for name, runs in pairs.items()}

    budgets = {name: {recipe: budget(n, e, p.tune_images, p.epochs, p.train_images) for recipe, (n, e) in studies[name].items()}
               for name, p in protos.items()}

    def write() -> dict[str, Any]:
        result = {"benchmark": BENCHMARK, "complete": all(runs.find(u) is not None for n, runs in pairs.items() for u in units[n]),
                  **summarise(out, chosen, budgets)}
        result["settings"] = {**{k: v for k, v in vars(args).items() if k != "no_progress"}, **chosen, "threads": threads,
                              "seconds_this_invocation": time.perf_counter() - started, "date": now_iso(), "machine": machine_info(),
                              "code": code_version()}
        write_summary(out, result)
        return result

    todo = {name: [u for u in units[name] if pairs[name].find(u) is None] for name in pairs}
    total = 0.0
    for name, runs in pairs.items():
        seconds, said = estimate(todo[name], protos[name], speeds(runs.runs.records, protos[name]), studies[name])
        total += seconds
        sizes = ", ".join(f"{recipe} {n} trials of {e} epochs" for recipe, (n, e) in studies[name].items())
        print(f"{name}: {len(todo[name])} of {len(units[name])} runs to do ({sizes}); teacher "
              f"{teachers[name]['test_acc']:.2f}% on {runs.sizes['test']} test images; train {runs.sizes['train']}, validate on "
              f"{runs.sizes['val']}; expected {seconds / 3600:.1f} h: {said}", flush=True)
    print(f"expected in all: {total / 3600:.1f} h on {threads} thread(s)", flush=True)

    try:
        for name, runs in pairs.items():
            for i, unit in enumerate(todo[name], 1):
                what = f"{unit.epochs} epoch(s), validation" if unit.kind == "short" else "full schedule, test"
                print(f"[{name} {i}/{len(todo[name])}] {unit.recipe}, seed {unit.seed}, {unit.kind} ({what}), {unit.student[:70]}", flush=True)
                runs.run(unit)
                write()
            runs.close()
    finally:
        result = write()
    report(result)
    return 0


def report(result: dict[str, Any]) -> None:
    for name, entry in result["pairs"].items():
        if "evidence" in entry:
            ev = entry["evidence"]
            rows = [[recipe, str(r["n"]), f"{fmt(r['test_acc']['mean'], 2)} ± {fmt(r['test_acc']['std'], 2)}",
                     "—" if r["gain_over_alone"] is None else f"{r['gain_over_alone']:+.2f}"] for recipe, r in ev["rows"].items()]
            print(f"\n{name}: teacher {entry['teacher']['test_acc']:.2f}%; evidence")
            print_table(["recipe", "runs", "test % (mean ± std of seeds)", "gain vs alone"], rows)
            goal, cost = ev["goals"]["accuracy"], ev["goals"]["cost"]
            if goal["n"]:
                print(f"goal {goal['rule']}: difference {fmt(goal['difference'], 2)} on {goal['n']} runs -> {goal['met']}; "
                      f"cost {fmt(cost['mean'], 2)}x a final run -> {cost['met']}")
            for key, label in (("tuning_v2", "v2"), ("tuning_v3", "v3")):
                if key in ev:
                    goal, cost = ev[key]["goals"]["accuracy"], ev[key]["goals"]["cost"]
                    print(f"{label} goal {goal['rule']}: difference {fmt(goal['difference'], 2)} on {goal['n']} runs -> {goal['met']}; "
                          f"cost {fmt(cost['mean'], 2)}x -> {cost['met']}; kept the configured recipe in {ev[key]['kept_configured']}")
        for e, f in entry.get("fidelity", {}).items():
            print(f"{name} fidelity at {e} epoch(s): {f['cells']} cell(s), {len(f['recipes'])} recipes, ρ {fmt(f['rho'], 3)}, "
                  f"short best {f['best_short']}, full best {f['best_full']}, regret {fmt(f['regret'], 2)} -> safe {f['safe']}")
    for key in ("tuner_v2", "tuner_v3"):
        if key in result:
            print(f"{key.replace('_', ' ')} ({result[key]['rule']}): {result[key]['default']}")
    if "safe_tune_epochs" in result:
        print(f"safe tune.epochs ({result['safe_tune_epochs']['rule']}): {result['safe_tune_epochs']['verdicts']}")


if __name__ == "__main__":
    sys.exit(guarded(main))
