"""Samplers and objectives: NSGA-II's Pareto front, grid over a finite space, and the combinations refused."""

from __future__ import annotations

import csv
import json
import math

import optuna
import pytest

from das.distill.fit import run_root
from das.errors import DasError
from das.models import arch_spec, build_model
from das.search import CalibrateConfig, SpaceConfig, run_search
from das.search.ledger import INFEASIBLE, SCORED
from das.storage import journal_storage
from das.spec import ArchSpec
from das.stats import count_params
from tests.tinysearch import search_args


def load(run_dir) -> optuna.Study:
    return optuna.load_study(study_name="das", storage=journal_storage(run_dir / "study.journal"))


def test_nsga2_writes_a_non_dominated_pareto_json_that_train_reads(tmp_path, teacher_ckpt) -> None:
    run = tmp_path / "run"
    args = search_args(run, teacher_ckpt, 12, budget={"max_params": 3000}, sampler="nsga2", objectives=["diswot", "params"],
                       report=["diswot_relation"])
    summary = run_search(**args)
    body = json.loads((run / "pareto.json").read_text())
    assert body["objectives"] == ["diswot", "params"] and body["directions"] == ["maximize", "minimize"]
    front = body["front"]
    assert summary["pareto"] == len(front) >= 1 and [e["index"] for e in front] == list(range(1, len(front) + 1))
    # By hand, over every feasible scored trial of the study: nothing dominates an entry, and
    # every trial that nothing dominates is an entry.
    scored = [t for t in load(run).trials if t.user_attrs.get("kind") == SCORED]
    assert len({t.user_attrs["key"] for t in scored}) == 12
    points = {t.user_attrs["arch"]: (t.user_attrs["scores"]["diswot"], t.user_attrs["params"]) for t in scored}

    def dominated(p) -> bool:
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points.values())

    on_front = {arch for arch, p in points.items() if not dominated(p)}
    assert {json.dumps(e["spec"], sort_keys=True) for e in front} == on_front
    assert all(points[json.dumps(e["spec"], sort_keys=True)] == (e["scores"]["diswot"], e["params"]) for e in front)
    diswot = [e["scores"]["diswot"] for e in front]
    assert diswot == sorted(diswot, reverse=True)  # stable order: the first objective, best first
    for trial in load(run).trials:  # over-budget trials report the worst value of each direction
        if trial.user_attrs.get("kind") == INFEASIBLE:
            assert trial.values == [-math.inf, math.inf]
    board = list(csv.DictReader((run / "leaderboard.csv").open()))
    assert sorted(int(r["pareto"]) for r in board if r["pareto"]) == [e["index"] for e in front]
    assert (run / "best_arch.json").is_file()
    # train.py's student: any entry, by its index.
    last = front[-1]
    student = f"{run}/pareto.json#{last['index']}"
    assert arch_spec(student) == ArchSpec.from_dict(last["spec"])
    assert count_params(build_model(student, 10)) == last["params"]
    assert run_root(None, student) == run / f"distill-pareto{last['index']}"
    with pytest.raises(DasError, match=rf"has {len(front)} entries .*#99 is out of range"):
        arch_spec(f"{run}/pareto.json#99")
    with pytest.raises(DasError, match=r"must be PATH/pareto.json#N"):
        arch_spec(f"{run}/pareto.json#first")


def test_grid_visits_every_non_isomorphic_member_once(tmp_path, teacher_ckpt, counting, toy) -> None:
    run = tmp_path / "run"
    args = search_args(run, teacher_ckpt, 50, space=SpaceConfig(name="toy"), sampler="grid", objective="counting",
                       budget={"max_params": 200})
    summary = run_search(**args)
    trials = [t for t in load(run).trials if t.state == optuna.trial.TrialState.COMPLETE]
    space = toy()
    distinct = {space.canonical(s) for s in space.enumerate()}
    assert sorted(t.user_attrs["key"] for t in trials) == sorted(distinct)  # each of the 4 once, none twice
    within = [t for t in trials if t.user_attrs["kind"] == SCORED]
    assert len(counting) == len(within) == summary["scored"] >= 1 and max(counting) <= 200
    assert summary["infeasible"] == len(trials) - len(within) >= 1  # the grid met the budget too
    assert "grid: all 4 distinct architectures" in summary["stopped_early"]
    again = run_search(**search_args(run, teacher_ckpt, 50, space=SpaceConfig(name="toy"), sampler="grid", objective="counting",
                                     budget={"max_params": 200}))
    assert again["trials"] == summary["trials"] and len(counting) == len(within)  # resumed: nothing left to visit


@pytest.mark.parametrize("study, said", [
    ({"sampler": "tpee"}, "study.sampler='tpee' is not a sampler: did you mean 'tpe'?"),
    ({"objectives": ["diswot"]}, "names fewer than two; for one, use study.objective"),
    ({"objectives": ["diswot", "paramz"]}, "did you mean 'params'"),
    ({"objectives": ["diswot", "diswot"]}, "names diswot twice"),
    ({"objectives": ["params", "flops"]}, "are all size terms"),
    ({"objectives": ["diswot", "params"], "objective": "snip"}, "are both given; give one"),
    ({"sampler": "grid", "space": "user"}, "study.sampler=grid needs a finite space"),
], ids=["sampler", "one", "unknown", "twice", "sizes", "both", "grid_infinite"])
def test_bad_sampler_and_objective_combinations_are_one_line(tmp_path, teacher_ckpt, study, said, monkeypatch) -> None:
    study = dict(study)
    space = None
    if study.pop("space", None):
        (tmp_path / "das_test_samplers_space.py").write_text(
            "from torch import nn\n\ndef net(trial):\n    w = trial.suggest_int('w', 1, 4)\n"
            "    return nn.Sequential(nn.Conv2d(3, w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10))\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        space = SpaceConfig(name="das_test_samplers_space:net")
    with pytest.raises(DasError) as err:
        run_search(**search_args(tmp_path / "run", teacher_ckpt, 2, space=space, **study))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "leaderboard.csv").exists()


def test_objectives_with_calibration_and_a_changed_objective_count_are_refused(tmp_path, teacher_ckpt) -> None:
    args = search_args(tmp_path / "run", teacher_ckpt, 2, objectives=["diswot", "params"])
    args["calibrate"] = CalibrateConfig(students=3)
    with pytest.raises(DasError, match="calibrate.students=3 chooses one objective"):
        run_search(**args)
    run_search(**search_args(tmp_path / "run", teacher_ckpt, 1))  # single objective
    with pytest.raises(DasError, match=r"optimises 1 objective\(s\) \(maximize\), this run 2"):
        run_search(**search_args(tmp_path / "run", teacher_ckpt, 2, objectives=["diswot", "params"]))
