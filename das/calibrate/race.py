"""A finalist race: a few candidates distilled on a short schedule, halved as they go, judged on validation.

Zero-cost scores rank a space coarsely; a few epochs of the real thing separate a handful of
finalists far better (on the NB201 ground truth, 10-epoch runs pick among the top 8 by the
default objective plus the largest in budget with a regret of 0.16 points, against 1.35 for the
largest alone: docs/results.md). :func:`run_race` distils the finalists on one short schedule
(``recipe.epochs``) with successive halving (Jamieson & Talwalkar, "Non-stochastic Best Arm
Identification and Hyperparameter Optimization", AISTATS 2016; the rungs of Li et al.'s
Hyperband, JMLR 2018): every finalist trains to the first rung, is tested on the validation
split, and only the best ``1/eta`` go on to the next rung, on the same schedule (a paused
:class:`~das.calibrate.trainer.StudentRun`, not a restart), until the last rung's best wins.

Rungs end at epochs ``ceil(E / eta^(R - r))`` for ``r = 0..R`` with ``R = ceil(log_eta(n))``,
repeated values merged, so with n finalists and E epochs the race costs about
``E · n · (R + 1) / eta^R`` student-epochs instead of ``E · n``; when E is too short to hold R
halvings, more finalists reach the end and the best of them wins. Ties go to the earlier
finalist (the caller's order, best objective first). A student whose loss diverged ranks last;
if all did, the first finalist wins and the result says so.

Resumable like the rest: each rung's accuracy is appended to ``DIR/race.jsonl`` as it is
measured (a :class:`~das.calibrate.results.ResultsFile` that refuses other settings), and a
student that goes on leaves its whole training state in ``DIR/state/`` first, so a kill -9
loses at most the epochs of the student in training, and a rerun gives the same winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from das.calibrate.data import PopulationData
from das.calibrate.results import ResultsFile
from das.calibrate.teacher_cache import TeacherCache
from das.calibrate.trainer import Recipe, StudentRun, init_student, weights_digest
from das.errors import DasError
from das.spec import ArchSpec
from das.stats import count_flops, count_params

RESULTS = "race.jsonl"
STATE = "state"


def rung_epochs(finalists: int, epochs: int, eta: int) -> list[int]:
    """The epochs at which the finalists are tested and halved (the last is the schedule's end)."""
    if finalists < 1 or epochs < 1 or eta < 2:
        raise DasError(f"a race needs finalists >= 1 (got {finalists}), epochs >= 1 (got {epochs}) and eta >= 2 (got {eta})")
    halvings = math.ceil(math.log(finalists, eta) - 1e-9) if finalists > 1 else 0
    return sorted({max(1, math.ceil(epochs / eta ** (halvings - r))) for r in range(halvings + 1)})


@dataclass(frozen=True)
class Finalist:
    """One finalist's race: its accuracy at each rung it reached."""

    spec: ArchSpec
    params: int
    flops: int
    accuracies: tuple[tuple[int, float], ...]  # (epoch, validation accuracy %)
    diverged: bool

    @property
    def epochs(self) -> int:
        return self.accuracies[-1][0] if self.accuracies else 0

    @property
    def last_acc(self) -> float:
        return self.accuracies[-1][1] if self.accuracies else math.nan


@dataclass(frozen=True)
class RaceResult:
    """What a race found.

    Attributes:
        winner: the finalist kept.
        finalists: every finalist, in the caller's order.
        rungs: the epochs at which finalists were halved.
        flop_epochs: the race's cost: sum over finalists of FLOPs × epochs trained.
        seconds: training and testing time of this invocation and earlier ones.
        note: a fallback taken, if any.
    """

    winner: Finalist
    finalists: tuple[Finalist, ...]
    rungs: tuple[int, ...]
    flop_epochs: float
    seconds: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"winner": str(self.winner.spec), "winner_spec": self.winner.spec.to_dict(), "rungs": list(self.rungs),
                "flop_epochs": self.flop_epochs, "seconds": self.seconds, "note": self.note,
                "finalists": [{"arch": str(f.spec), "params": f.params, "flops": f.flops, "epochs": f.epochs, "diverged": f.diverged,
                               "accuracies": [list(a) for a in f.accuracies]} for f in self.finalists]}


def _rank_key(acc: float, diverged: bool, order: int) -> tuple[float, int]:
    return (-math.inf if diverged or not math.isfinite(acc) else acc, -order)


def run_race(
    finalists: Sequence[ArchSpec],
    *,
    cache: TeacherCache,
    data: PopulationData,
    recipe: Recipe,
    num_classes: int,
    directory: Path,
    settings: dict[str, Any],
    seed: int = 0,
    eta: int = 2,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> RaceResult:
    """Race ``finalists`` (best objective first) on ``recipe`` with successive halving; see the module docstring.

    Args:
        settings: what else makes this race (teacher, data, the search's identity): a rerun with
            other settings is refused instead of mixing races.
    """
    if len({s.to_json() for s in finalists}) != len(finalists):
        raise DasError("race finalists must be distinct architectures")
    rungs = rung_epochs(len(finalists), recipe.epochs, eta)
    directory.mkdir(parents=True, exist_ok=True)
    state_dir = directory / STATE
    results = ResultsFile(directory / RESULTS, {**settings, "kind": "das.race", "finalists": [s.to_json() for s in finalists],
                                                "recipe": recipe.to_dict(), "seed": seed, "eta": eta, "rungs": rungs,
                                                "validation": data.digest()})
    sizes = {}
    for spec in finalists:
        student = spec.build(num_classes)
        sizes[spec.to_json()] = (count_params(student), count_flops(student, data.input_shape))
    alive = list(range(len(finalists)))
    acc: dict[tuple[int, int], tuple[float, bool]] = {}
    with tqdm(total=len(rungs), desc="race", unit="rung", disable=not progress) as bar:
        for r, epoch in enumerate(rungs):
            for i in alive:
                spec = finalists[i]
                record = results.find(key=spec.to_json(), rung=r)
                if record is None:
                    record = _train_to(spec, epoch, r, results, state_dir / f"{i}.pt", cache, data, recipe, num_classes, seed,
                                       device, channels_last, keep_state=r < len(rungs) - 1)
                acc[(i, r)] = (record["val_acc"], record["diverged"])
            ranked = sorted(alive, key=lambda i: _rank_key(*acc[(i, r)], order=i), reverse=True)
            if r < len(rungs) - 1:
                keep = max(1, math.ceil(len(alive) / eta))
                dropped = ranked[keep:]
                alive = sorted(ranked[:keep])
                log(f"race: epoch {epoch}: {len(alive)} of {len(ranked)} go on "
                    f"(best {acc[(ranked[0], r)][0]:.2f}%, dropped {', '.join(str(finalists[i]) for i in dropped) or 'none'})")
            else:
                alive = ranked
            bar.update()
    winner_index, note = alive[0], ""
    if all(acc[(i, len(rungs) - 1)][1] for i in alive):
        winner_index, note = 0, "every finalist diverged at the last rung: the first finalist (the objective's best) is kept"
        log(f"race: {note}")
    out = []
    flop_epochs = 0.0
    for i, spec in enumerate(finalists):
        reached = tuple((rungs[r], acc[(i, r)][0]) for r in range(len(rungs)) if (i, r) in acc)
        params, flops = sizes[spec.to_json()]
        diverged = any(acc[(i, r)][1] for r in range(len(rungs)) if (i, r) in acc)
        out.append(Finalist(spec, params, flops, reached, diverged))
        flop_epochs += flops * (reached[-1][0] if reached else 0)
    for path in state_dir.glob("*.pt"):  # the race is decided: the paused runs are not needed again
        path.unlink()
    seconds = sum(r["seconds"] for r in results.records)
    return RaceResult(out[winner_index], tuple(out), tuple(rungs), flop_epochs, seconds, note)


def _train_to(spec: ArchSpec, epoch: int, rung: int, results: ResultsFile, state: Path, cache: TeacherCache, data: PopulationData,
              recipe: Recipe, num_classes: int, seed: int, device, channels_last: bool, keep_state: bool) -> dict[str, Any]:
    """Continue (or start) ``spec``'s run to ``epoch``, test it, save its state if it may go on, and record the rung."""
    student = init_student(lambda: spec.build(num_classes), seed)
    run = StudentRun(student, cache, data, recipe, seed, True, device, channels_last)
    if state.is_file():  # where this student stopped at the last rung (or later, when killed before its record)
        saved = torch.load(state, map_location=device, weights_only=False)
        if saved.get("key") == spec.to_json() and saved["run"]["init_digest"] == run.init_digest:
            run.load_state_dict(saved["run"])
    before = run.seconds
    run.train_epochs(epoch - run.epoch)
    if keep_state:
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_name(state.name + ".tmp")
        torch.save({"key": spec.to_json(), "run": run.state_dict()}, tmp)
        tmp.replace(state)
    record = {"key": spec.to_json(), "arch": str(spec), "rung": rung, "epoch": run.epoch, "val_acc": run.evaluate(),
              "diverged": run.diverged, "seconds": run.seconds - before, "weights": weights_digest(run.student)}
    results.add(record)
    return record
