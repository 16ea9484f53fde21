"""Budgets are checked before scoring, and study.trials counts distinct architectures scored."""

from __future__ import annotations

import csv
import json
import math
import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

import das.proxies.flops as flops_module
import das.search.trial_objective as objective_module
import das.stats
from das.errors import DasError
from das.search import SpaceConfig, run_search
from das.search.checks import make_space
from das.search.config import BudgetConfig
from das.search.ledger import DUPLICATE, INFEASIBLE, SCORED, Ledger
from das.storage import journal_storage
from das.search.trial_objective import TrialObjective
from das.spaces import create_space
from das.spaces.nb201 import EDGES, parse_arch
from das.spec import ArchSpec
from das.stats import count_params
from tests.tinysearch import search_args

#: Two NB201 cells that compute the same function: node 1 feeds nothing, so its conv is dead.
ISOMORPHS = ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
             "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")


def load(run_dir) -> optuna.Study:
    return optuna.load_study(study_name="das", storage=journal_storage(run_dir / "study.journal"))


def rows(run_dir) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "leaderboard.csv").open()))


def nb201_params(arch: str) -> dict[str, str]:
    """The Optuna params NB201Space.suggest asks for, for ``arch`` (to enqueue it)."""
    return {f"edge_{t}<-{s}": op for (t, s), op in zip(EDGES, parse_arch(arch))}


def test_an_over_budget_candidate_is_never_scored_nor_best(tmp_path, teacher_ckpt, counting) -> None:
    budget = 1600  # about a third of NB201 C=2 N=1 cells (1,332–4,468 params) fit
    run = tmp_path / "run"
    summary = run_search(**search_args(run, teacher_ckpt, 5, budget={"max_params": budget}, objective="counting"))
    assert counting and max(counting) <= budget  # no proxy ever saw an over-budget network
    assert len(counting) == summary["scored"] == 5
    assert summary["infeasible"] > 0 and summary["trials"] == summary["scored"] + summary["duplicates"] + summary["infeasible"]
    best = json.loads((run / "best_arch.json").read_text())
    assert best["search"]["params"] <= budget and best["search"]["feasible"]
    assert count_params(ArchSpec.load(run / "best_arch.json").build(10)) == best["search"]["params"]
    board = rows(run)
    over = [r for r in board if r["feasible"] == "False"]
    assert over and all(r["counting"] == "" and int(r["params"]) > budget for r in over)  # listed, with its size, unscored
    assert all(int(r["params"]) <= budget for r in board if r["feasible"] == "True")
    study = load(run)
    for trial in study.trials:
        if trial.user_attrs.get("kind") == INFEASIBLE:
            assert trial.user_attrs["infeasible"] is True and "scores" not in trial.user_attrs
            assert trial.constraints["params"] > 0 and trial.value == -math.inf  # TPE/NSGA-II learn it as infeasible
    assert (run / "plots" / "score_vs_params.png").is_file()


def test_an_isomorphic_cell_reuses_its_score_without_a_proxy_and_uses_no_trial(counting) -> None:
    space = create_space("nb201", C=2, N=1)
    assert space.canonical(space.spec(arch=ISOMORPHS[0])) == space.canonical(space.spec(arch=ISOMORPHS[1]))
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
    ledger = Ledger(3, lambda t: t.user_attrs.get("key"))
    objective = TrialObjective(space, [batch], None, ["counting"], BudgetConfig(), 10, (3, 8, 8), torch.device("cpu"), ledger=ledger)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for arch in (*ISOMORPHS, ISOMORPHS[0]):
        study.enqueue_trial(nb201_params(arch))
    study.optimize(objective)  # runs until the ledger has its 3 distinct architectures
    kinds = [t.user_attrs["kind"] for t in study.trials if t.state == TrialState.COMPLETE]
    assert kinds[:3] == [SCORED, DUPLICATE, DUPLICATE]
    assert study.trials[1].user_attrs["duplicate_of"] == 0 and study.trials[1].value == study.trials[0].value
    assert kinds.count(SCORED) == 3 and len(counting) == 3  # the two duplicates called no proxy
    assert len({t.user_attrs["key"] for t in study.trials if t.user_attrs.get("kind") == SCORED}) == 3


def test_flops_are_counted_once_per_candidate(monkeypatch) -> None:
    calls = []
    real = das.stats.count_flops

    def counted(model, shape):
        calls.append(1)
        return real(model, shape)

    monkeypatch.setattr(objective_module, "count_flops", counted)
    monkeypatch.setattr(flops_module, "count_flops", counted)
    space = create_space("nb201", C=2, N=1)
    batch = (torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))
    objective = TrialObjective(space, [batch], None, ["flops", "az_complexity"], BudgetConfig(), 10, (3, 8, 8), torch.device("cpu"))
    candidate = objective.evaluate(space.spec(arch=ISOMORPHS[1]))
    assert len(calls) == 1 and candidate.scores["flops"] == candidate.scores["az_complexity"] == candidate.flops > 0


def test_a_finite_space_that_runs_out_stops_with_one_line(tmp_path, teacher_ckpt, counting, toy) -> None:
    lines = []
    args = search_args(tmp_path / "run", teacher_ckpt, 10, space=SpaceConfig(name="toy"), objective="counting")
    args["log"] = lines.append
    summary = run_search(**args)
    assert summary["scored"] == 4 == len(counting)  # its 4 distinct networks (8 members), each scored once
    assert "every one of the 4 distinct architectures" in summary["stopped_early"]
    said = [line for line in lines if line.startswith("search: stopped")]
    assert len(said) == 1 and "4 of study.trials=10" in said[0]


def test_a_budget_almost_nothing_meets_stops_instead_of_looping(tmp_path, teacher_ckpt, counting, monkeypatch) -> None:
    monkeypatch.setattr(objective_module, "STALL_TRIALS", 30)
    monkeypatch.setattr(objective_module, "EXHAUSTION_CHECK_AFTER", 30)
    budget = {"max_params": 1332}  # only the parameter-free cells (the smallest member's size)
    summary = run_search(**search_args(tmp_path / "run", teacher_ckpt, 500, budget=budget, objective="counting"))
    assert 0 < summary["scored"] < 500 and len(counting) == summary["scored"]
    assert "no new architecture within the budget" in summary["stopped_early"]


def test_a_latency_budget_is_measured_and_bad_values_are_one_line(tmp_path, teacher_ckpt, counting, monkeypatch) -> None:
    summary = run_search(**search_args(tmp_path / "ok", teacher_ckpt, 2, budget={"max_latency_ms": 60000.0}, objective="counting"))
    board = rows(tmp_path / "ok")
    assert summary["scored"] == 2 and all(0 < float(r["latency_ms"]) < 60000 for r in board)
    monkeypatch.setattr(objective_module, "STALL_TRIALS", 5)
    monkeypatch.setattr(objective_module, "EXHAUSTION_CHECK_AFTER", 5)
    calls = len(counting)
    with pytest.raises(DasError, match=r"no scored candidate is within budget.max_latency_ms=1e-06; .* the fastest"):
        run_search(**search_args(tmp_path / "slow", teacher_ckpt, 2, budget={"max_latency_ms": 1e-6}, objective="counting"))
    assert len(counting) == calls  # too slow: never scored
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(DasError, match=r"budget.max_latency_ms=.* must be a positive number of milliseconds"):
            run_search(**search_args(tmp_path / "bad", teacher_ckpt, 2, budget={"max_latency_ms": bad}))


USER_SPACE = '''
from torch import nn


def big(trial, num_classes=10):
    width = trial.suggest_categorical("width", [64, 128])
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    import sys

    name = "das_test_trials_space"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_SPACE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_a_user_space_no_member_of_which_fits_is_refused_before_any_work(tmp_path, teacher_ckpt, user_module) -> None:
    args = search_args(tmp_path / "run", teacher_ckpt, 2, space=SpaceConfig(name=f"{user_module}:big"), budget={"max_params": 100})
    with pytest.raises(DasError, match=r"^budget.max_params=100 is below every one of 32 random members of .*:big \(the smallest has 2442 params\)"):
        run_search(**args)
    assert not (tmp_path / "run" / "leaderboard.csv").exists()


def test_an_edited_user_space_is_not_resumed_as_the_same_space(tmp_path, teacher_ckpt, user_module) -> None:
    run = tmp_path / "run"
    args = search_args(run, teacher_ckpt, 1, space=SpaceConfig(name=f"{user_module}:big"))
    run_search(**args)
    path = tmp_path / f"{user_module}.py"
    path.write_text(path.read_text().replace("[64, 128]", "[32, 128]"))
    with pytest.raises(DasError, match=r"other settings \(space\.source: was '[0-9a-f]+', now '[0-9a-f]+'\)"):
        run_search(**search_args(run, teacher_ckpt, 2, space=SpaceConfig(name=f"{user_module}:big")))


def test_naming_a_resolved_default_is_the_same_space() -> None:
    pytest.importorskip("timm")
    _, implicit = make_space(SpaceConfig(name="timm", args={"family": "resnet"}))
    _, explicit = make_space(SpaceConfig(name="timm", args={"family": "resnet", "model": "resnet18", "depths": [2, 1]}))
    assert implicit["model"] == "resnet18" and implicit == explicit  # not "model: was None, now 'resnet18'"


def test_a_derived_objective_is_computed_from_the_scores_and_stored_beside_them() -> None:
    """A calibration's fitted combination is searched as ``selection``: a function of the trial's proxy scores."""
    space = create_space("nb201", C=2, N=1)
    batch = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(4))
    rule = lambda s: -math.log(s["params"]) + 0.0 * s["flops"]  # noqa: E731  (prefers the smallest: unlike any proxy)
    objective = TrialObjective(space, [batch], None, ["params", "flops"], BudgetConfig(), 10, (3, 8, 8), torch.device("cpu"),
                               objectives=["selection"], derived={"selection": rule})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=6)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        scores = t.user_attrs["scores"]
        assert t.value == pytest.approx(-math.log(scores["params"])) == pytest.approx(scores["selection"])
    assert study.best_trial.user_attrs["params"] == min(t.user_attrs["params"] for t in done)
    partial = objective.score(objective.build(next(iter(space.enumerate()))), ["flops"])
    assert "selection" not in partial  # a resume's missing proxies alone derive nothing
