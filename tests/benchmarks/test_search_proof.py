"""benchmarks/search_proof.py at a tiny size: real searches, then the report against a stand-in table checked by hand.

The accuracy table is read only for the report, so the test runs the searches once, then writes
a stand-in table that holds the seed-0 picks (and fillers, some over the budget) but not the
seed-1 ones, and reruns: nothing is searched again, and the percentiles, the unmatched picks and
the best architecture within the budget are compared with values computed here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import search_proof
from das.errors import DasError
from das.search import reference
from das.spaces import create_space
from das.stats import count_params
from tests.benchmarks.conftest import ARCHS
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar

C, N = 2, 1
#: At C=2, N=1: ARCHS[:3] have 1,332-1,556 params, ARCHS[3:] 2,116-3,684.
BUDGET = 2000
SPACE = create_space("nb201", C=C, N=N)


def params(arch: str) -> int:
    return count_params(SPACE.spec(arch=arch).build(10))


def write_table(path: Path, acc: dict[str, float]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", "cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc", "isomorph_key"])
        for i, (arch, a) in enumerate(acc.items()):
            w.writerow([i, arch, a, 50.0, 20.0, "k"])
    return path


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    write_fake_cifar(tmp_path / "train.npz", 120)
    write_fake_cifar(tmp_path / "test.npz", 16, seed=1)
    save_random_teacher(tmp_path / "teacher.th")
    write_table(tmp_path / "first.csv", {a: 50.0 + i for i, a in enumerate(ARCHS)})
    return ["--accuracy-csv", str(tmp_path / "first.csv"), "--train-file", str(tmp_path / "train.npz"),
            "--test-file", str(tmp_path / "test.npz"), "--teacher", "resnet20", "--teacher-checkpoint", str(tmp_path / "teacher.th"),
            "--objectives", "ensemble,params", "--samplers", "tpe,random", "--seeds", "0,1", "--trials", "3",
            "--budget-params", str(BUDGET), "--budget-objectives", "ensemble", "--rejection-samples", "2",
            "--C", str(C), "--N", str(N), "--probe-batch-size", "8", "--reference-size", "3", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "proof.json")]


def test_searches_resume_and_the_report_is_computed_as_by_hand(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                one_thread) -> None:
    built = []
    real_build = reference.build_reference
    monkeypatch.setattr(reference, "build_reference", lambda **kw: built.append(kw["budget"]) or real_build(**kw))
    assert search_proof.main(argv) == 0
    runs_path = tmp_path / "proof.runs.jsonl"
    lines = [json.loads(line) for line in runs_path.read_text().splitlines()]
    assert lines[0]["settings"]["probe"]["ensemble"]["probe_batches"] == 2  # cifar10_ensemble.yaml's
    assert lines[0]["settings"]["probe"]["params"]["probe_batches"] == 1  # cifar10_resnet56.yaml's
    records = [r for r in lines if r.get("kind") == "search"]
    assert len(records) == (2 * 2 + 2) * 2
    assert all(r["counts"]["scored"] == 3 for r in records)
    budgeted = [r for r in records if r["max_params"]]
    assert budgeted and all(r["params"] <= BUDGET for r in budgeted)
    # One reference per (seed, budget): the second sampler copies the first one's file.
    assert len(built) == 4
    work = tmp_path / "proof.json.work"
    for seed in (0, 1):
        for suffix in ("", f"-params{BUDGET}"):
            tpe, rnd = (work / f"ensemble-{s}-seed{seed}{suffix}" / reference.REFERENCE_FILE for s in ("tpe", "random"))
            assert tpe.read_text() == rnd.read_text()
    for r in records:  # the pick is best_arch.json's
        assert r["arch"] == json.loads((work / r["name"] / "best_arch.json").read_text())["choices"]["arch"]

    # A stand-in table: the seed-0 picks, fillers whose accuracy rises with params, none of the seed-1 picks.
    seed0 = {r["arch"] for r in records if r["seed"] == 0}
    fillers = {a: 60.0 + params(a) / 100 for a in ARCHS if a not in {r["arch"] for r in records}}
    acc = {**fillers, **{a: 40.0 + i for i, a in enumerate(sorted(seed0))}}
    write_table(tmp_path / "stand_in.csv", acc)
    before = runs_path.read_text()
    monkeypatch.setattr(search_proof, "run_case", lambda *a, **k: pytest.fail("a finished search ran again"))
    rerun = [*argv]
    rerun[rerun.index("--accuracy-csv") + 1] = str(tmp_path / "stand_in.csv")
    assert search_proof.main(rerun) == 0
    assert runs_path.read_text() == before
    result = json.loads((tmp_path / "proof.json").read_text())
    assert result["complete"]

    values = list(acc.values())
    assert result["table"]["rows"] == len(acc) and result["table"]["best"]["acc"] == max(values)
    assert result["table"]["mean_acc"] == pytest.approx(sum(values) / len(values))
    within = {a: v for a, v in acc.items() if params(a) <= BUDGET}
    best_within = max(within, key=within.get)
    assert max(values) not in within.values()  # the budget matters in this table
    for group, res in result["results"].items():
        mine = sorted((r for r in records if group == search_proof.Case(r["objective"], r["sampler"], r["seed"], r["max_params"]).group),
                      key=lambda r: r["seed"])
        found = [r for r in mine if r["arch"] in acc]
        missing = [r for r in mine if r["arch"] not in acc]
        assert res["n"] == 2 and res["unmatched"]["count"] == len(missing) >= (0 if mine[0]["arch"] == mine[1]["arch"] else 1)
        assert [p["arch"] for p in res["unmatched"]["picks"]] == [r["arch"] for r in missing]
        for p in res["unmatched"]["picks"]:
            key = SPACE.canonical(SPACE.spec(arch=p["arch"]))
            assert p["isomorphs_in_table"] == sum(SPACE.canonical(SPACE.spec(arch=a)) == key for a in acc)
        by_hand = [100.0 * sum(v <= acc[r["arch"]] for v in values) / len(values) for r in found]
        assert res["percentile"]["values"] == pytest.approx(by_hand)
        assert res["acc"]["values"] == pytest.approx([acc[r["arch"]] for r in found])
        assert res["acc"]["mean"] == pytest.approx(sum(acc[r["arch"]] for r in found) / len(found))
        pool = within if mine[0]["max_params"] else acc  # a budgeted search is measured against the budget's best
        assert res["gap_to_best"] == pytest.approx(max(pool.values()) - res["acc"]["mean"])
        assert res["gain_over_random"] == pytest.approx(res["acc"]["mean"] - sum(pool.values()) / len(pool))
        if mine[0]["max_params"]:
            ref = res["table_within_budget"]
            assert ref["best"] == {"arch": best_within, "acc": acc[best_within], "params": params(best_within)}
            assert ref["rows"] == len(within) and ref["mean_acc"] == pytest.approx(sum(within.values()) / len(within))
            assert res["percentile_within_budget"]["values"] == pytest.approx(
                [100.0 * sum(v <= acc[r["arch"]] for v in within.values()) / len(within) for r in found])
        else:
            assert "table_within_budget" not in res

    for group, t in result["throughput"].items():
        assert group.endswith(f"params<={BUDGET}")
        assert t["trials_per_min_with_rejection"]["mean"] >= t["trials_per_min_without_rejection_estimated"]["mean"] > 0
        assert t["score_over_budget_s"]["mean"] > t["reject_s"]["mean"] > 0


def test_refuses_other_settings_and_an_unreachable_budget(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(DasError, match="no architecture of .* is within it"):
        search_proof.main([*argv, "--budget-params", "1000"])
    with pytest.raises(DasError, match="unknown \\['zico'\\]"):
        search_proof.main([*argv, "--objectives", "zico"])
    runs = tmp_path / "proof.runs.jsonl"
    runs.write_text(json.dumps({"settings": {"benchmark": "search_proof", "trials": 99}}) + "\n")
    with pytest.raises(DasError, match="other settings.*trials"):
        search_proof.main(argv)
