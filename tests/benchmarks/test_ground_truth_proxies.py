"""benchmarks/ground_truth_proxies.py on a fake distillation summary: scores, resume, correlations, budget picks, bad inputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmarks import ground_truth_proxies as gtp
from benchmarks.diswot_variants import VARIANTS
from das.cli import guarded
from das.errors import DasError
from das.spaces import create_space
from das.stats import count_params
from tests.benchmarks.conftest import ARCHS
from tests.benchmarks.fakes import save_random_teacher

SPACE_ARGS = {"C": 2, "N": 1}
# Made-up accuracies, not monotone in size, so every correlation is neither 1 nor undefined.
DISTILLED = [61.0, 74.0, 66.5, 80.0, 70.0]
GAINS = [2.0, -1.0, 3.5, 0.5, 4.0]


def write_summary(path: Path, students: list[dict], settings: dict, population: str = "nb201") -> Path:
    path.write_text(json.dumps({"benchmark": "distill_ground_truth", "population": population, "students": students,
                                "teacher": {"test_acc": 55.0}, "settings": settings}))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    """Five trained tiny NB201 students and one untrained, an 8×8 probe npz and a TinyNet teacher checkpoint."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "train_fake.npz"
    np.savez(npz, x=rng.integers(0, 256, size=(32, 8, 8, 3), dtype=np.uint8), y=np.arange(32) % 10)
    teacher = save_random_teacher(tmp_path / "teacher.th", "tests.tinynets:TinyNet")
    space = create_space("nb201", **SPACE_ARGS)
    students = []
    for i, arch in enumerate(ARCHS):
        spec = space.spec(arch=arch)
        s = {"arch": str(spec), "spec": spec.to_dict(), "params": count_params(space.build(spec, 10)), "bin": i}
        if i < len(DISTILLED):
            s |= {"flops": 1, "distilled_acc": DISTILLED[i], "alone_acc": DISTILLED[i] - GAINS[i], "gain": GAINS[i]}
        else:
            s["trained"] = False
        students.append(s)
    settings = {"space_args": SPACE_ARGS, "teacher": "tests.tinynets:TinyNet", "teacher_checkpoint": str(teacher),
                "train_file": str(npz), "data_seed": 0, "image_size": 8, "population": "nb201"}
    summary = write_summary(tmp_path / "gt.json", students, settings)
    return {"summary": summary, "npz": npz, "students": students, "settings": settings, "out": tmp_path / "proxies.json",
            "argv": ["--ground-truth", str(summary), "--data", str(npz), "--batch-size", "8", "--threads", "1", "--bootstrap", "50",
                     "--out", str(tmp_path / "proxies.json")]}


def read_scores(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


# --------------------------------------------------------------------------- pure functions


def test_budget_pick_matches_a_hand_computation() -> None:
    params = [10, 20, 30, 40, 40, 90]
    acc = [50.0, 70.0, 60.0, 65.0, 75.0, 99.0]
    scores = {"good": [0.0, 9.0, 1.0, 2.0, 3.0, 100.0],   # top in ≤ 40 is the 20-param student (70)
              "tied": [1.0, 1.0, 5.0, 5.0, 0.0, 0.0],     # 30 and 40 tie at the top: (60 + 65) / 2
              "failed": [math.nan, 3.0, math.nan, math.nan, math.nan, 8.0],  # failures rank last: the 20-param student
              "dead": [math.nan] * 6}
    pick = gtp.budget_pick(params, acc, scores, budget=40)
    assert pick["students"] == 5  # the 90-param student is over budget
    assert pick["oracle"] == 75.0
    assert pick["largest"] == {"distilled_acc": 70.0, "regret": 5.0}  # two at 40 params: (65 + 75) / 2
    assert pick["random"]["distilled_acc"] == pytest.approx(64.0) and pick["random"]["regret"] == pytest.approx(11.0)
    assert pick["picks"]["good"] == {"distilled_acc": 70.0, "regret": 5.0}
    assert pick["picks"]["tied"] == {"distilled_acc": 62.5, "regret": 12.5}
    assert pick["picks"]["failed"] == {"distilled_acc": 70.0, "regret": 5.0}
    assert pick["picks"]["dead"] == {"distilled_acc": None, "regret": None}
    assert gtp.budget_pick(params, acc, scores, budget=9)["students"] == 0
    whole = gtp.budget_pick(params, acc, scores, budget=90)
    assert whole["picks"]["good"]["regret"] == 0.0 and whole["largest"]["distilled_acc"] == 99.0


def test_in_budget_correlation_is_spearman_among_the_students_within_each_budget() -> None:
    params = [10.0, 20.0, 30.0, 40.0, 50.0]
    acc = [60.0, 58.0, 70.0, 65.0, 80.0]
    score = [1.0, 2.0, 0.5, 4.0, 5.0]
    got = gtp.in_budget_correlation(score, params, acc, [30.0, 50.0])
    # by hand: within 30, score ranks (2, 3, 1) against acc ranks (2, 1, 3): ρ = 1 − 6·(0+4+4)/(3·8) = −1;
    # within 50, ρ = 1 − 6·Σd²/(5·24) with score ranks (2,3,1,4,5), acc ranks (2,1,4,3,5): Σd² = 0+4+9+1+0 = 14
    assert got["per_budget"] == pytest.approx([-1.0, 1 - 6 * 14 / 120])
    assert got["mean"] == pytest.approx((-1.0 + 1 - 6 * 14 / 120) / 2)
    assert gtp.in_budget_correlation(score, params, acc, [10.0, 50.0])["mean"] is None  # one student: no ρ, no mean


def test_budgets_are_the_percentiles_of_the_population() -> None:
    assert gtp.budgets([10, 20, 30, 40, 50]) == [20.0, 30.0, 40.0]
    assert gtp.budgets([1, 2, 3, 4]) == [1.75, 2.5, 3.25]  # linear interpolation between students


# --------------------------------------------------------------------------- end to end


def test_scores_every_trained_student_and_resumes_without_rescoring(inputs: dict, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    argv = [*inputs["argv"], "--proxies", "params,snip,diswot,ensemble"]
    assert gtp.main(argv) == 0
    assert "regret p50" in capsys.readouterr().out

    scores_csv = inputs["out"].with_suffix(".scores.csv")
    rows = read_scores(scores_csv)
    trained = [s for s in inputs["students"] if s.get("trained", True)]
    assert sorted(r["arch"] for r in rows) == sorted(s["arch"] for s in trained)  # one row each; the untrained one is not scored
    assert set(VARIANTS) <= set(rows[0]) and {"meco", "zico", "az_trainability"} <= set(rows[0])  # the ensemble through its members

    result = json.loads(inputs["out"].read_text())
    assert result["students_trained"] == 5 and result["students_untrained_skipped"] == 1
    res = result["results"]
    assert list(res)[:5] == ["params", "snip", "diswot", "ensemble", "ensemble+diswot"] and set(VARIANTS) <= set(res)
    # the declared combination is the log-rank rule over the ensemble's members and diswot, on the scores file's values
    members = ["meco", "zico", "az_expressivity", "az_progressivity", "az_trainability", "az_complexity", "diswot"]
    ranks = [stats.rankdata([float(r[m]) for r in rows]) for m in members]
    combined = np.sum([np.log(rk / len(rows)) for rk in ranks], axis=0)
    acc = [by_arch_acc for by_arch_acc in (next(s["distilled_acc"] for s in trained if s["arch"] == r["arch"]) for r in rows)]
    assert res["ensemble+diswot"]["vs_distilled_acc"]["spearman"] == pytest.approx(stats.spearmanr(combined, acc).statistic, abs=1e-12)
    assert len(res["ensemble+diswot"]["in_budget_vs_distilled_acc"]["per_budget"]) == 3
    # Each correlation is scipy's on the same numbers: the scores file's column against the summary's accuracies.
    by_arch = {s["arch"]: s for s in trained}
    snip = [float(r["snip"]) for r in rows]
    for truth, key in (([by_arch[r["arch"]]["distilled_acc"] for r in rows], "vs_distilled_acc"),
                       ([by_arch[r["arch"]]["gain"] for r in rows], "vs_gain"),
                       ([by_arch[r["arch"]]["alone_acc"] for r in rows], "vs_alone_acc")):
        assert res["snip"][key]["spearman"] == pytest.approx(stats.spearmanr(snip, truth).statistic, abs=1e-12)
        assert res["snip"][key]["kendall"] == pytest.approx(stats.kendalltau(snip, truth).statistic, abs=1e-12)
    params = [s["params"] for s in trained]
    assert res["params"]["vs_distilled_acc"]["spearman"] == pytest.approx(stats.spearmanr(params, DISTILLED).statistic)
    assert res["params"]["partial_vs_distilled_acc_given_log_params"]["spearman"] == 0.0  # nothing beyond size
    # The params proxy is the summary's count; the default variant is the search's diswot.
    assert [float(r["params"]) for r in rows] == [by_arch[r["arch"]]["params"] for r in rows]
    for r in rows:
        assert float(r["diswot@teacher_random/bn_train"]) == pytest.approx(float(r["diswot"]), rel=1e-9)

    picks = result["budget_picks"]
    assert [b["percentile"] for b in picks] == [25, 50, 75]
    assert [b["budget_params"] for b in picks] == pytest.approx(list(np.percentile(params, [25, 50, 75])))
    for b in picks:
        inside = [s for s in trained if s["params"] <= b["budget_params"]]
        assert b["students"] == len(inside) and b["oracle"] == max(s["distilled_acc"] for s in inside)
        assert set(b["picks"]) == set(res)

    # Resuming scores nothing: the scorer is never called and the scores file is left as it was.
    before = scores_csv.read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a scored student was scored again")

    monkeypatch.setattr(gtp, "score_student", refuse)
    assert gtp.main([*argv, "--resume"]) == 0
    assert scores_csv.read_text() == before
    with pytest.raises(DasError, match="already exists"):
        gtp.main(argv)  # a finished run is not overwritten without --resume


def test_every_registered_proxy_scores_the_resnet_population(tmp_path: Path, inputs: dict) -> None:
    space_args = {"C": 4, "depths": [1], "multipliers": [0.5, 1.0]}  # at least 2 channels a layer (meco refuses 1)
    space = create_space("resnet_cifar", **space_args)
    specs = [space.spec(blocks=[1, 1, 1], width=w) for w in ([0.5, 0.5, 0.5], [1.0, 0.5, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, 1.0])]
    students = [{"arch": str(s), "spec": s.to_dict(), "params": count_params(space.build(s, 10)),
                 "distilled_acc": a, "alone_acc": a - 1.0, "gain": 1.0} for s, a in zip(specs, [50.0, 58.0, 55.0, 57.0])]
    summary = write_summary(tmp_path / "gt_resnet.json", students, {**inputs["settings"], "space_args": space_args}, "resnet_cifar")
    out = tmp_path / "resnet.json"
    assert gtp.main(["--ground-truth", str(summary), "--data", str(inputs["npz"]), "--batch-size", "8", "--bootstrap", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["population"] == "resnet_cifar" and len(read_scores(out.with_suffix(".scores.csv"))) == 4
    for name, r in result["results"].items():
        fails = r["failures"].get("count", r["failures"].get("archs_with_a_failed_member"))
        assert fails == 0 and r["vs_distilled_acc"]["n"] == 4, name


# --------------------------------------------------------------------------- bad inputs


def one_line_error(argv: list[str], match: str) -> None:
    with pytest.raises(DasError, match=match) as err:
        gtp.main(argv)
    assert "\n" not in str(err.value)


def test_bad_inputs_fail_in_one_line(inputs: dict, tmp_path: Path, capsys) -> None:
    rest = inputs["argv"][2:]
    one_line_error(["--ground-truth", str(tmp_path / "nope.json"), *rest], r"--ground-truth .*nope.json not found")
    (tmp_path / "bad.json").write_text("{students: ")
    one_line_error(["--ground-truth", str(tmp_path / "bad.json"), *rest], "is not JSON")
    (tmp_path / "other.json").write_text(json.dumps({"results": {}}))
    one_line_error(["--ground-truth", str(tmp_path / "other.json"), *rest], "not a distill_ground_truth summary")

    few = [s if i < 2 else {**{k: s[k] for k in ("arch", "spec", "params")}, "trained": False} for i, s in enumerate(inputs["students"])]
    few_path = write_summary(tmp_path / "few.json", few, inputs["settings"])
    one_line_error(["--ground-truth", str(few_path), *rest], "has 2 trained students; ranking needs at least 3")
    mixed = write_summary(tmp_path / "mixed.json", inputs["students"], inputs["settings"], population="resnet_cifar")
    one_line_error(["--ground-truth", str(mixed), *rest], "'nb201' architecture in a 'resnet_cifar' population")

    summary = str(inputs["summary"])
    one_line_error(["--ground-truth", summary, "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "x.json")], r"--data .*none.npz not found")
    one_line_error([*inputs["argv"], "--teacher-checkpoint", str(tmp_path / "none.th")], r"--teacher-checkpoint .*none.th not found")
    one_line_error([*inputs["argv"], "--proxies", "snipp"], "snip")
    assert guarded(gtp.main, [*inputs["argv"], "--batch-size", "0"]) == 1
    assert "--batch-size 0 must be at least 1" in capsys.readouterr().err
    assert not inputs["out"].exists()


def test_the_fast_bootstrap_criterion_is_the_reported_one() -> None:
    rng = np.random.default_rng(1)
    size = rng.integers(10, 60, 40).astype(float)  # repeated sizes: ties inside budgets
    acc, x = rng.normal(50, 2, 40).round(1), rng.normal(0, 1, 40)
    x[3] = math.nan  # a failed score is left out by both
    budget_list = gtp.budgets(size)
    slow = gtp.in_budget_correlation(x, size, acc, budget_list)["mean"]
    assert gtp._fast_criterion(x, size, acc, budget_list) == pytest.approx(slow, abs=1e-12)


def test_the_margin_over_params_is_zero_for_params_and_positive_for_the_truth() -> None:
    rng = np.random.default_rng(2)
    size = rng.permutation(np.arange(100, 132)).astype(float)
    acc = 0.05 * size + rng.normal(0, 1, 32)  # size explains part of it
    budget_list = gtp.budgets(size)
    same = gtp.margin_over_params(size, size, acc, budget_list, resamples=200)
    assert same["margin"] == 0 and same["ci95"] == [0.0, 0.0] and same["share_above_zero"] == 0
    oracle = gtp.margin_over_params(acc, size, acc, budget_list, resamples=200)
    assert oracle["margin"] > 0.2 and oracle["ci95"][0] > 0 and oracle["share_above_zero"] == 1


def test_a_population_named_apart_from_its_space_reads_its_students_space(tmp_path: Path) -> None:
    """Population T is called mobilenetv3 and samples the timm space: its students build through that space."""
    space = create_space("timm", family="mobilenetv3", channel_multipliers=[0.25, 0.5, 0.75], depth_multipliers=[0.5])
    specs = list(space.enumerate())
    summary = {"population": "mobilenetv3", "settings": {"space_args": space.space_args},
               "students": [{"spec": s.to_dict(), "params": 1000 * (i + 1), "distilled_acc": 30.0 + i, "alone_acc": 25.0, "gain": 5.0 + i}
                            for i, s in enumerate(specs)]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(summary))
    truth = gtp.read_ground_truth(path)
    assert truth.population == "mobilenetv3" and truth.space == "timm" and len(truth.students) == 3
    assert gtp.make_space(truth.space, space.space_args).size == 3
