"""The benchmark command lines end to end on tiny inputs, and the rank aggregation they report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks import naslib_agreement, nb201_correlation, proxy_speed
from das.cli import guarded
from das.report.ranking import average_ranks, log_rank_ensemble, rank_correlation
from das.spaces import create_space
from das.spaces.nb201 import to_naslib_tuple
from tests.benchmarks.conftest import ARCHS, TINY, tiny_params

COLUMNS = ("cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc")


def run_correlation(fake_csv: Path, fake_npz: Path, out: Path, proxies: str, *extra: str, num_archs: int = 6) -> dict:
    argv = ["--accuracy-csv", str(fake_csv), "--data", str(fake_npz), "--num-archs", str(num_archs), "--seed", "0",
            "--proxies", proxies, "--out", str(out), *TINY, *extra]
    assert nb201_correlation.main(argv) == 0
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- ranks and the ensemble


def test_spearman_of_a_copy_of_the_truth_is_one() -> None:
    acc = [93.1, 70.2, 88.0, 91.5, 10.0]
    r = rank_correlation(acc, acc)
    assert r["spearman"] == pytest.approx(1.0) and r["kendall"] == pytest.approx(1.0) and r["n"] == 5


def test_correlation_leaves_out_failures_and_says_how_many_pairs_it_used() -> None:
    r = rank_correlation([1.0, math.nan, 3.0, math.inf, 2.0], [1, 2, 3, 4, 2.5])
    assert r["n"] == 3 and r["spearman"] == pytest.approx(1.0)
    assert rank_correlation([1.0, 1.0, 1.0], [1, 2, 3])["spearman"] is None  # constant: undefined, not NaN


def test_log_rank_aggregation_matches_a_hand_computed_example_with_ties() -> None:
    population = [{"a": 1.0, "b": 4.0}, {"a": 2.0, "b": 3.0}, {"a": 2.0, "b": 2.0}, {"a": 3.0, "b": 1.0}]
    # ranks (1 = worst): a -> 1, 2.5, 2.5, 4 (the tie shares 2 and 3); b -> 4, 3, 2, 1; m = 4
    expected = [math.log(1 / 4) + math.log(4 / 4), math.log(2.5 / 4) + math.log(3 / 4),
                math.log(2.5 / 4) + math.log(2 / 4), math.log(4 / 4) + math.log(1 / 4)]
    np.testing.assert_allclose(log_rank_ensemble(population, ["a", "b"]), expected)


def test_a_failed_member_score_ranks_last() -> None:
    np.testing.assert_allclose(average_ranks([2.0, math.nan, 5.0, -math.inf, 1.0]), [4, 1.5, 5, 1.5, 3])
    population = [{"a": 5.0}, {"a": math.nan}, {"a": 1.0}]
    assert np.argmin(log_rank_ensemble(population, ["a"])) == 1


def test_an_ensemble_of_one_member_ranks_as_that_member() -> None:
    values = [0.3, -2.0, 7.5, 7.5, 1.0, 0.0]
    ensemble = log_rank_ensemble([{"p": v} for v in values], ["p"])
    np.testing.assert_array_equal(stats.rankdata(ensemble), stats.rankdata(values))


# --------------------------------------------------------------------------- nb201_correlation


def test_cli_end_to_end_writes_the_documented_json(fake_csv: Path, fake_npz: Path, params_flops: list[str], tmp_path: Path) -> None:
    out = tmp_path / "res" / "out.json"
    result = run_correlation(fake_csv, fake_npz, out, "params,flops", "--ensemble", "params", "--ensemble", "params,flops")
    assert result["complete"] and result["archs_scored"] == 6 and result["archs_per_second"] > 0
    settings = result["settings"]
    for key in ("seed", "num_archs", "batch_size", "threads", "torch", "date", "machine", "C", "N", "num_batches"):
        assert key in settings
    assert settings["num_archs"] == 6 and settings["batch_size"] == 64 and settings["num_batches"] == 1
    for name in ("params", "flops", "ensemble(params)", "ensemble(params+flops)"):
        entry = result["results"][name]
        for column in COLUMNS:
            assert set(entry[column]) == {"spearman", "kendall", "n"}
    assert result["results"]["params"]["failures"]["count"] == 0
    # the fake CIFAR-10 column *is* the parameter count of each arch at C=4, N=1
    assert result["results"]["params"]["cifar10_test_acc"]["spearman"] == pytest.approx(1.0)
    assert result["results"]["ensemble(params)"]["cifar10_test_acc"]["spearman"] == pytest.approx(1.0)
    assert out.with_suffix(".scores.csv").is_file()


def test_failures_are_counted_per_proxy_and_do_not_take_others_down(fake_csv: Path, fake_npz: Path, flaky: dict, tmp_path: Path) -> None:
    result = run_correlation(fake_csv, fake_npz, tmp_path / "o.json", "bench_raises,bench_nan,bench_count", "--ensemble", "bench_nan,bench_count")
    res = result["results"]
    with_pool = sum("avg_pool_3x3" in a for a in ARCHS)
    with_none = sum("none" in a for a in ARCHS)
    assert res["bench_raises"]["failures"]["raised"] == with_pool == res["bench_raises"]["failures"]["count"]
    assert "ValueError: pooling" in res["bench_raises"]["failures"]["examples"][0]
    assert res["bench_nan"]["failures"]["count"] == res["bench_nan"]["failures"]["nonfinite"] == with_none
    assert "nan" in res["bench_nan"]["failures"]["examples"][0]
    assert res["bench_nan"]["cifar10_test_acc"]["n"] == 6 - with_none
    assert res["bench_count"]["failures"]["count"] == 0 and res["bench_count"]["cifar10_test_acc"]["n"] == 6
    assert res["ensemble(bench_nan+bench_count)"]["failures"]["archs_with_a_failed_member"] == with_none


def test_two_batches_when_a_proxy_needs_two(fake_csv: Path, fake_npz: Path, two_batch: str, tmp_path: Path) -> None:
    result = run_correlation(fake_csv, fake_npz, tmp_path / "o.json", two_batch, "--batch-size", "32")
    assert result["settings"]["num_batches"] == 2 and result["results"][two_batch]["failures"]["count"] == 0


def test_resume_skips_scored_archs_and_extends_the_sample(fake_csv: Path, fake_npz: Path, flaky: dict, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    first = run_correlation(fake_csv, fake_npz, out, "bench_count", num_archs=3)
    assert len(flaky["count"]) == 3
    scored_first = set(flaky["count"])
    scores = out.with_suffix(".scores.csv")
    with scores.open("a") as f:
        f.write("999,|half-written")  # a kill mid-line must not break the resume
    full = run_correlation(fake_csv, fake_npz, out, "bench_count", "--resume", num_archs=6)
    assert len(flaky["count"]) == 6 and not scored_first & set(flaky["count"][3:])  # only the 3 new archs
    assert full["archs_scored"] == 6 and first["archs_scored"] == 3
    # the same command on a finished run scores nothing and reports the same numbers
    again = run_correlation(fake_csv, fake_npz, out, "bench_count", "--resume", num_archs=6)
    assert len(flaky["count"]) == 6 and again["results"] == full["results"]


def test_resume_with_a_new_proxy_scores_only_what_is_missing(fake_csv: Path, fake_npz: Path, flaky: dict, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    run_correlation(fake_csv, fake_npz, out, "bench_count", num_archs=3)
    first = set(flaky["count"])
    result = run_correlation(fake_csv, fake_npz, out, "bench_count,bench_nan", "--resume", num_archs=6)
    # bench_count runs again on the 3 new archs only (twice where bench_nan fails: the one-by-one retry)
    assert len(first) == 3 and set(flaky["count"][3:]) == set(ARCHS) - first
    assert set(flaky["nan"]) == set(ARCHS)
    assert result["archs_scored"] == 6 and result["results"]["bench_count"]["cifar10_test_acc"]["n"] == 6
    header = out.with_suffix(".scores.csv").read_text().splitlines()[1]
    assert header == "key,arch,seconds,bench_count,bench_nan,errors"


def test_resume_gives_the_same_scores_as_one_run(fake_csv: Path, fake_npz: Path, tmp_path: Path, register) -> None:
    # a proxy that reads the initial weights: equal only if each arch is seeded before it is built
    register("bench_weights", lambda ctx: float(sum(p.detach().sum() for p in ctx.model.parameters())))
    a = run_correlation(fake_csv, fake_npz, tmp_path / "a.json", "bench_weights", num_archs=6)
    run_correlation(fake_csv, fake_npz, tmp_path / "b.json", "bench_weights", num_archs=2)
    b = run_correlation(fake_csv, fake_npz, tmp_path / "b.json", "bench_weights", "--resume", num_archs=6)
    rows = lambda p: (p.with_suffix(".scores.csv").read_text().splitlines()[2:])  # noqa: E731
    strip = lambda lines: sorted(",".join(l.split(",")[:2] + l.split(",")[3:]) for l in lines)  # drop timing  # noqa: E731
    assert strip(rows(tmp_path / "a.json")) == strip(rows(tmp_path / "b.json"))
    assert a["results"] == b["results"]


def test_an_existing_scores_file_needs_resume_and_the_same_settings(fake_csv, fake_npz, flaky, tmp_path, capsys) -> None:
    out = tmp_path / "o.json"
    run_correlation(fake_csv, fake_npz, out, "bench_count", num_archs=2)
    base = ["--accuracy-csv", str(fake_csv), "--data", str(fake_npz), "--num-archs", "2", "--proxies", "bench_count", "--out", str(out), *TINY]
    assert guarded(nb201_correlation.main, base) == 1
    assert "--resume" in capsys.readouterr().err
    assert guarded(nb201_correlation.main, [*base, "--resume", "--seed", "1"]) == 1
    assert "seed" in capsys.readouterr().err


def test_report_only_adds_ensembles_without_scoring(fake_csv, fake_npz, flaky, register, tmp_path) -> None:
    out = tmp_path / "o.json"
    run_correlation(fake_csv, fake_npz, out, "bench_count,bench_nan")
    calls = len(flaky["count"])
    register("bench_late", lambda ctx: 1.0)
    run_correlation(fake_csv, fake_npz, out, "bench_late", "--resume", num_archs=2)  # scored for 2 archs only
    report = run_correlation(fake_csv, fake_npz, out, "all", "--report-only", "--ensemble", "bench_count,bench_nan")
    assert len(flaky["count"]) == calls  # nothing was scored again
    assert set(report["results"]) == {"bench_count", "bench_nan", "ensemble(bench_count+bench_nan)"}  # not bench_late
    assert report["complete"] and report["settings"]["report_only"]


def test_a_second_writer_is_refused_while_a_run_holds_the_scores_file(fake_csv, fake_npz, flaky, tmp_path, capsys) -> None:
    from das.report.scores_file import ScoresFile

    out = tmp_path / "o.json"
    run_correlation(fake_csv, fake_npz, out, "bench_count", num_archs=2)
    settings = json.loads(out.with_suffix(".scores.csv").read_text().splitlines()[0][len("# settings: "):])
    holder = ScoresFile(out.with_suffix(".scores.csv"), settings, ["bench_count"], resume=True)
    try:
        argv = ["--accuracy-csv", str(fake_csv), "--data", str(fake_npz), "--num-archs", "6", "--proxies", "bench_count",
                "--out", str(out), "--resume", *TINY]
        assert guarded(nb201_correlation.main, argv) == 1
        assert "another run" in capsys.readouterr().err
    finally:
        holder.close()
    assert not out.with_suffix(".scores.csv.lock").exists()


@pytest.mark.parametrize("which", ["--accuracy-csv", "--data", "--teacher-checkpoint"])
def test_a_missing_input_is_a_one_line_error_naming_the_path(which, fake_csv, fake_npz, params_flops, tmp_path, capsys, register) -> None:
    register("bench_teacher", lambda ctx: 0.0, needs_teacher=True)
    missing = tmp_path / "nowhere" / "missing.file"
    paths = {"--accuracy-csv": fake_csv, "--data": fake_npz, "--teacher-checkpoint": tmp_path / "t.th", which: missing}
    proxies = "bench_teacher" if which == "--teacher-checkpoint" else "params"
    argv = [f"{k}={v}" for k, v in paths.items()] + ["--proxies", proxies, "--num-archs", "6", "--out", str(tmp_path / "o.json"), *TINY]
    assert guarded(nb201_correlation.main, argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and which in err


def test_bad_ensemble_members_are_refused(fake_csv, fake_npz, params_flops, tmp_path, capsys) -> None:
    argv = ["--accuracy-csv", str(fake_csv), "--data", str(fake_npz), "--proxies", "params", "--ensemble", "params,flops",
            "--out", str(tmp_path / "o.json"), *TINY]
    assert guarded(nb201_correlation.main, argv) == 1
    assert "flops" in capsys.readouterr().err


def test_diswot_uses_the_teacher_once(fake_csv, fake_npz, tmp_path) -> None:
    from teachers import create_teacher

    teacher = tmp_path / "resnet20.th"
    torch.save({"state_dict": create_teacher("resnet20", num_classes=10).state_dict()}, teacher)
    result = run_correlation(fake_csv, fake_npz, tmp_path / "o.json", "diswot", "--teacher", "resnet20",
                             "--teacher-checkpoint", str(teacher), num_archs=3)
    assert result["settings"]["teacher"] == "resnet20" and result["results"]["diswot"]["failures"]["count"] == 0


# --------------------------------------------------------------------------- naslib_agreement, proxy_speed


def test_naslib_agreement_on_a_fake_reference(fake_csv, fake_npz, params_flops, tmp_path) -> None:
    section = {}
    for i, arch in enumerate(ARCHS):
        key = str(to_naslib_tuple(arch))
        section[key] = {"val_accuracy": 80.0 + i, "params": {"score": tiny_params(arch) / 1e6, "time": 0.1},
                        "jacov": {"score": -float(i), "time": 0.1}}
    naslib = tmp_path / "zc.json"
    naslib.write_text(json.dumps({"cifar10": section}))
    out = tmp_path / "agree.json"
    argv = ["--naslib", str(naslib), "--data", str(fake_npz), "--proxies", "params,flops", "--out", str(out),
            "--accuracy-csv", str(fake_csv), *TINY]
    assert naslib_agreement.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["archs_scored"] == len(ARCHS)
    assert result["results"]["params"]["das_vs_naslib"]["spearman"] == pytest.approx(1.0)
    assert "das_vs_naslib" in result["results"]["flops"] and "jacov" in result["naslib_proxies_without_das_counterpart"]
    # the fake table's CIFAR-10 column is the parameter count, and NASLib's fake params score is too
    assert result["results"]["params"]["das_vs_table_accuracy"] == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "n": len(ARCHS)}
    assert result["results"]["params"]["naslib_vs_table_accuracy"]["spearman"] == pytest.approx(1.0)


def test_proxy_speed_reports_each_mode(fake_npz, params_flops, tmp_path) -> None:
    out = tmp_path / "speed.json"
    argv = ["--data", str(fake_npz), "--num-archs", "2", "--proxies", "params,flops", "--out", str(out), *TINY]
    assert proxy_speed.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"forward_backward", "fused", "separate_sum"} <= set(result["modes"])
    assert result["ratios"]["fused_over_forward_backward"] > 0 and set(result["per_proxy_mean_seconds"]) == {"params", "flops"}
    assert result["settings"]["threads"] >= 1 and result["settings"]["batch_size"] == 64


def test_ensemble_is_reported_over_the_sample_and_against_a_disjoint_reference(fake_csv, fake_npz, tmp_path) -> None:
    from das.proxies import ENSEMBLE_MEMBERS

    reference_run = tmp_path / "ref.json"
    run_correlation(fake_csv, fake_npz, reference_run, ",".join(ENSEMBLE_MEMBERS), "--batch-size", "16", num_archs=6)
    result = run_correlation(fake_csv, fake_npz, tmp_path / "o.json", "ensemble", "--batch-size", "16", "--seed", "1",
                             "--ensemble-reference", str(reference_run.with_suffix(".scores.csv")), num_archs=3)
    res = result["results"]
    header = (tmp_path / "o.scores.csv").read_text().splitlines()[1].split(",")
    assert set(ENSEMBLE_MEMBERS) <= set(header) and "ensemble" not in header  # scored through its members
    assert res["ensemble"]["members"] == list(ENSEMBLE_MEMBERS) and res["ensemble"]["cifar10_test_acc"]["n"] == 3
    assert "reference of 3 architectures" in res["ensemble_vs_reference"]["population"]  # the 3 sampled archs left out
    assert res["ensemble_vs_reference"]["cifar10_test_acc"]["n"] == 3


def test_population_proxies_are_refused_where_no_population_exists(fake_npz, tmp_path, capsys) -> None:
    argv = ["--data", str(fake_npz), "--num-archs", "2", "--proxies", "ensemble", "--out", str(tmp_path / "s.json"), *TINY]
    assert guarded(proxy_speed.main, argv) == 1
    assert "population" in capsys.readouterr().err


def test_diswot_variants_agree_with_score_and_cover_every_combination(fake_csv, fake_npz, tmp_path) -> None:
    from benchmarks import diswot_variants
    from das.proxies import DisWOTReference, score
    from das.report.inputs import load_probe
    from teachers import create_teacher

    teacher = tmp_path / "resnet20.th"
    torch.save({"state_dict": create_teacher("resnet20", num_classes=10).state_dict()}, teacher)
    out = tmp_path / "variants.json"
    argv = ["--accuracy-csv", str(fake_csv), "--data", str(fake_npz), "--num-archs", "4", "--teacher", "resnet20",
            "--teacher-checkpoint", str(teacher), "--out", str(out), *TINY]
    assert diswot_variants.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == set(diswot_variants.COLUMNS) and result["archs"] == 4
    # the train-mode, random-teacher column is exactly what score() gives the search
    with out.with_suffix(".scores.csv").open() as f:
        row = next(csv.DictReader(line for line in f if not line.startswith("#")))
    batch = load_probe(fake_npz, 64, 1, 0)[0]
    torch.manual_seed(0)
    student = create_space("nb201", C=4, N=1).spec(arch=row["arch"]).build(10)
    net = create_teacher("resnet20", checkpoint=str(teacher), num_classes=10)
    for init in ("random", "trained"):
        ref = DisWOTReference.from_teacher(net, batch, init=init, seed=0)
        expected = score(student, [batch], ["diswot"], teacher=ref, seed=0)["diswot"]
        assert float(row[f"diswot@teacher_{init}/bn_train"]) == pytest.approx(expected, rel=1e-9)
    assert guarded(diswot_variants.main, argv) == 1  # a finished run is not overwritten without --resume
    assert guarded(diswot_variants.main, [*argv, "--resume"]) == 0


def test_partial_rank_correlation_equals_the_correlation_of_rank_residuals() -> None:
    from das.report.ranking import partial_rank_correlation

    rng = np.random.default_rng(1)
    size = rng.normal(size=200)
    accuracy = size + rng.normal(size=200)
    score = 0.5 * size + rng.normal(size=200)
    ranks = [stats.rankdata(v) for v in (score, accuracy, size)]
    design = np.column_stack([np.ones(200), ranks[2]])
    residual = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    expected = np.corrcoef(*residual)[0, 1]
    assert partial_rank_correlation(score, accuracy, size)["spearman"] == pytest.approx(expected, rel=1e-9)
    # a score that only tracks size knows nothing beyond it
    assert partial_rank_correlation(np.exp(size), accuracy, size)["spearman"] == 0.0
    # exactly 0 on a few students too, where spearmanr's rho of a column with its log is 1 − 4e-16
    params = np.array([1000.0, 5000, 2000, 30000, 7000])
    assert partial_rank_correlation(params, np.array([50.0, 60, 52, 70, 65]), np.log(params))["spearman"] == 0.0


def test_within_bins_ranks_inside_each_size_quartile() -> None:
    from das.report.ranking import within_bins_correlation

    size = np.arange(8.0)
    accuracy = np.array([2, 1, 4, 3, 6, 5, 8, 7.0])  # inside each pair of sizes the smaller is better
    result = within_bins_correlation(-size, accuracy, size, bins=4)
    assert result["per_bin"] == pytest.approx([1.0] * 4) and result["mean"] == pytest.approx(1.0)
    assert rank_correlation(-size, accuracy)["spearman"] < 0  # while across sizes it is wrong
