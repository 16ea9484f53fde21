"""A tiny search runs, writes its results, resumes, and refuses impossible budgets."""

from __future__ import annotations

import csv
import json

import pytest

from das.data import DasDataModule
from das.errors import DasError
from das.proxies import EnsembleReference
from das.search import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig, run_search
from das.spec import ArchSpec


def tiny(tmp_path, trials: int, **budget):
    return dict(
        run_dir=tmp_path,
        data=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[]),
        teacher=TeacherConfig(spec="tests.tinynets:TinyNet", epochs=1),
        space=SpaceConfig(name="nb201", args={"C": 4, "N": 1}),
        budget=BudgetConfig(**budget),
        study=StudyConfig(trials=trials, probe_batch_size=16, sampler="random", objective="diswot"),
        device="cpu",
        log=lambda *_: None,
    )


def test_search_writes_results_and_resumes(tmp_path) -> None:
    summary = run_search(**tiny(tmp_path, 3))
    assert summary["scored"] == 3
    for name in ("leaderboard.csv", "best_arch.json", "plots/score_vs_params.png", "plots/history.png", "study.journal", "teacher/teacher.pt"):
        assert (tmp_path / name).is_file(), name
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert {"arch", "diswot", "diswot_relation", "diswot_semantic", "params", "flops"} <= set(rows[0])
    scores = [float(r["diswot"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    best = json.loads((tmp_path / "best_arch.json").read_text())
    assert best["search"]["diswot"] == pytest.approx(scores[0])
    # best_arch.json rebuilds the leaderboard's first row: the same architecture, the same size.
    spec = ArchSpec.load(tmp_path / "best_arch.json")
    assert str(spec) == rows[0]["arch"] and best["search"]["trial"] == int(rows[0]["trial"])
    model = spec.build(10)
    assert sum(p.numel() for p in model.parameters()) == best["search"]["params"] == int(rows[0]["params"])
    assert spec.space == "nb201" and dict(spec.space_args) == {"C": 4, "N": 1}

    again = run_search(**tiny(tmp_path, 5))  # same study: only two more trials
    assert again["scored"] == 5


def test_the_default_objective_ranks_by_size_first_and_reports_diswot(tmp_path) -> None:
    args = tiny(tmp_path, 3)
    args["study"] = StudyConfig(trials=3, probe_batch_size=16, sampler="random")  # the code's defaults
    summary = run_search(**args)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert {"size_first", "diswot", "diswot_relation", "diswot_semantic"} <= set(rows[0])
    scores = [float(r["size_first"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    params = [int(r["params"]) for r in rows]
    assert params == sorted(params, reverse=True)  # the largest first
    assert summary["objective"] == "size_first"


def test_budget_below_the_smallest_candidate_is_refused(tmp_path) -> None:
    with pytest.raises(DasError, match="smallest candidate"):
        run_search(**tiny(tmp_path, 2, max_params=10))


def test_unknown_proxy_is_refused_before_any_work(tmp_path) -> None:
    args = tiny(tmp_path, 2)
    args["study"] = StudyConfig(trials=2, objective="diswt")
    with pytest.raises(DasError, match="did you mean 'diswot'"):
        run_search(**args)
    assert not (tmp_path / "teacher").exists()


def test_resuming_with_other_settings_is_refused(tmp_path) -> None:
    run_search(**tiny(tmp_path, 2))
    args = tiny(tmp_path, 3)
    args["space"] = SpaceConfig(name="nb201", args={"C": 8, "N": 1})
    with pytest.raises(DasError, match="other settings.*space"):
        run_search(**args)


def ensemble_study(trials: int, **kw) -> StudyConfig:
    return StudyConfig(trials=trials, probe_batch_size=16, probe_batches=2, sampler="random", objective="ensemble",
                       report=["meco", "zico"], reference_size=kw.pop("reference_size", 4), **kw)


def test_ensemble_objective_ranks_against_a_saved_in_budget_reference(tmp_path) -> None:
    args = tiny(tmp_path, 3, max_params=12000)
    args["study"] = ensemble_study(3)
    run_search(**args)
    reference = EnsembleReference.load(tmp_path / "ensemble_reference.json")
    assert reference.size == 4
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert all(float(r["ensemble"]) <= 0.0 for r in rows if r["feasible"] == "True")
    assert all(r["ensemble"] == "" for r in rows if r["feasible"] == "False")  # over budget: never scored
    saved = (tmp_path / "ensemble_reference.json").read_text()
    args["study"] = ensemble_study(4)
    run_search(**args)  # resumes: the same reference is read back, not rebuilt
    assert (tmp_path / "ensemble_reference.json").read_text() == saved
    args["study"] = ensemble_study(5, reference_size=6)
    with pytest.raises(DasError, match="ensemble_reference_size"):
        run_search(**args)


def test_too_few_probe_batches_are_refused_before_any_work(tmp_path) -> None:
    args = tiny(tmp_path, 2)
    args["study"] = StudyConfig(trials=2, objective="zico", report=[])
    with pytest.raises(DasError, match="probe_batches 2"):
        run_search(**args)
    assert not (tmp_path / "teacher").exists()


def test_the_trained_teacher_is_the_same_in_a_fresh_run_dir(tmp_path) -> None:
    import torch

    from das.search.teacher_training import prepare_teacher

    weights = []
    for name in ("a", "b"):
        args = tiny(tmp_path / name, 1)
        args["data"].setup("fit")
        teacher, _ = prepare_teacher(args["teacher"], args["data"], 10, (3, 8, 8), tmp_path / name, log=lambda *_: None, seed=3)
        weights.append(teacher.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
