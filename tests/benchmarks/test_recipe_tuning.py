"""benchmarks/recipe_tuning.py at tiny size: its runs, resume, refusals, R1's runs equal to cifar10_distill's, the summary's arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import cifar10_distill
from benchmarks import recipe_tuning as rt
from das.calibrate.trainer import StudentRun
from das.errors import DasError
from das.spaces import create_space
from das.tune.study import refine_candidate
from tests.benchmarks.conftest import ARCHS
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar

RECIPES = "default,s400,tuned,alone"  # each pair's goal (R1: tuned vs s400, R2: tuned vs default) and the gains


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """Fake 32×32 CIFAR files, an untrained ResNet-20 as both pairs' teacher, two C=4 NB201 cells as R2's students."""
    write_fake_cifar(tmp_path / "train.npz", 120)
    write_fake_cifar(tmp_path / "test.npz", 30, seed=1)
    save_random_teacher(tmp_path / "teacher.th")
    space = create_space("nb201", C=4, N=1)
    (tmp_path / "students.json").write_text(json.dumps({"students": [{"key": space.spec(arch=a).to_json()} for a in ARCHS[3:6]]}))
    return ["--train-file", str(tmp_path / "train.npz"), "--test-file", str(tmp_path / "test.npz"),
            "--r1-teacher", "resnet20", "--r1-teacher-checkpoint", str(tmp_path / "teacher.th"),
            "--r2-teacher", "resnet20", "--r2-teacher-checkpoint", str(tmp_path / "teacher.th"),
            "--r2-students", str(tmp_path / "students.json"), "--r2-only", "0:2",
            "--r1-train-images", "40", "--r2-train-images", "40", "--val-images", "20", "--r1-epochs", "1", "--r2-epochs", "1",
            "--tune-epochs", "1", "--fidelity-epochs", "1,2", "--r1-tune-images", "20", "--r2-tune-images", "20", "--r2-views", "2",
            "--batch-size", "20", "--warmup-epochs", "0", "--seeds", "0", "--recipes", RECIPES, "--budget", "1", "--no-progress",
            "--out", str(tmp_path / "out" / "res.json")]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_runs_summary_resume_and_refusals(tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, one_thread) -> None:
    out = tmp_path / "out"
    assert rt.main(tiny) == 0
    r1, r2 = records(out / "res.R1.runs.jsonl"), records(out / "res.R2.runs.jsonl")
    assert "expected in all" in capsys.readouterr().out
    finals = {(r["recipe"], r["student"]) for r in r1 if r["kind"] == "final"}
    assert finals == {(name, "resnet20") for name in RECIPES.split(",")}
    shorts = sorted((r["recipe"], r["epochs"]) for r in r1 if r["kind"] == "short")
    assert shorts == sorted((name, e) for name in ("default", "s400") for e in (1, 2))  # the fidelity recipes asked for
    assert all(r["val_images"] == 20 and r["train_images_used"] == 20 for r in r1 if r["kind"] == "short")
    (tuned,) = [r for r in r1 if r.get("recipe") == "tuned"]
    assert tuned["tune"]["trials"]["complete"] + tuned["tune"]["trials"]["pruned"] == 2  # the budget rule: 1 × 1 × 40 / (1 × 20)
    assert tuned["tune"]["seconds"] > 0 and tuned["tune"]["final_seconds"] > 0 and tuned["definition"]["tune"]["trials"] == 2
    students = {r["student"] for r in r2 if r["kind"] == "final"}
    assert len(students) == 2 and all(json.loads(s)["space"] == "nb201" for s in students)
    r2_tuned = [r for r in r2 if r.get("recipe") == "tuned"]
    assert len(r2_tuned) == 2 and all(r["tune"]["recipe"]["losses"] and r["tune"]["final_seconds"] == r["seconds"] for r in r2_tuned)

    summary = json.loads((out / "res.json").read_text())
    assert summary["complete"] and list(summary["pairs"]) == ["R2", "R1"]  # the cheap pair first, as asked
    for name, pair in summary["pairs"].items():
        assert pair["budget"]["tuned"]["trials"] == 2 and "tuned_v2" not in pair["budget"]  # not asked for
        assert set(pair["evidence"]["rows"]) == {"default", "tuned", "tuned_guarded", "alone"} | ({"s400"} if name == "R1" else set())
        assert pair["evidence"]["goals"]["accuracy"]["n"] == len(pair["students"])
        assert set(pair["fidelity"]) == {"1", "2"}
    assert "dkd_beside_kd" in summary["pairs"]["R1"]["evidence"] and set(summary["safe_tune_epochs"]["verdicts"]) == {"1", "2"}
    assert all(r["tune"]["configured_val_acc"] is not None and r["tune"]["val_images"] == 20 for r in [tuned, *r2_tuned])
    assert all(pair["evidence"]["guard"]["runs"] == len(pair["students"]) for pair in summary["pairs"].values())
    assert isinstance(summary["switch_guard"]["default"], bool)  # both pairs complete at the one seed asked for

    # A rerun trains nothing and leaves every file as it was.
    files = {p: p.read_text() for p in out.glob("res.*.runs.jsonl")}
    monkeypatch.setattr(rt.train_command, "main", lambda argv: pytest.fail("a finished train.py run was run again"))
    monkeypatch.setattr(StudentRun, "train_epochs", lambda self, n: pytest.fail("a finished run was trained again"))
    assert rt.main(tiny) == 0
    assert {p: p.read_text() for p in files} == files
    # A command for fewer recipes or parts still summarises every recorded run.
    assert rt.main([*tiny, "--recipes", "default", "--parts", "evidence"]) == 0
    again = json.loads((out / "res.json").read_text())
    assert all(again["pairs"][n]["fidelity"] == summary["pairs"][n]["fidelity"] for n in ("R1", "R2"))

    # A run killed while its line was written: the cut line is dropped and that run alone is trained again.
    path = out / "res.R2.runs.jsonl"
    lost = json.loads(files[path].splitlines()[-1])
    path.write_text(files[path][:-40])
    monkeypatch.undo()
    trained: list[int] = []
    train_epochs = StudentRun.train_epochs
    monkeypatch.setattr(StudentRun, "train_epochs", lambda self, n: (trained.append(n), train_epochs(self, n))[1])
    assert rt.main([*tiny, "--pairs", "R2"]) == 0
    again = records(path)
    assert trained == [1] and again[-1]["recipe"] == lost["recipe"] and again[-1]["student"] == lost["student"]
    assert list(json.loads((out / "res.json").read_text())["pairs"]) == ["R2", "R1"]  # a command for one pair still summarises both
    assert {k: again[-1][k] for k in ("test_acc", "init_digest")} == {k: lost[k] for k in ("test_acc", "init_digest")}  # the same run

    # Other settings, or a recipe made otherwise, are refused in one line.
    with pytest.raises(DasError, match=r"other settings.*epochs") as err:
        rt.main([*tiny, "--r1-epochs", "2"])
    monkeypatch.setitem(rt.RECIPES, "s400", {"losses": {**rt.LOGIT_TERMS, **rt.cosine(300.0)}, "feature_pairs": "stages"})
    with pytest.raises(DasError, match="s400.*choose another --out") as err2:
        rt.main(tiny)
    assert "\n" not in str(err.value) + str(err2.value)


def test_the_tuner_v2_and_v3_on_r3(tiny: list[str], tmp_path: Path, one_thread) -> None:
    """R3 (the population trainer on another sample) with the v2 study (anchors after the configured trial, no pruning, the guard
    on) and the v3 (a refinement of the cosine scale where the v2 draws)."""
    argv = [*tiny, "--pairs", "R3", "--r3-students", str(tmp_path / "students.json"), "--r3-only", "1:3", "--parts", "evidence",
            "--recipes", "default,s400,tuned_v2,tuned_v3", "--v2-tune-epochs", "2", "--trials", "6"]
    assert rt.main(argv) == 0
    out = tmp_path / "out"
    r3 = records(out / "res.R3.runs.jsonl")
    finals = sorted((r["recipe"], r["student"]) for r in r3 if r["kind"] == "final")
    students = sorted({s for _, s in finals})
    assert len(students) == 2 and finals == sorted((name, s) for name in ("default", "s400", "tuned_v2", "tuned_v3") for s in students)
    for name, settings in (("tuned_v2", rt.V2), ("tuned_v3", rt.V3)):
        runs = [r for r in r3 if r.get("recipe") == name]
        assert all(r["definition"]["tune"] == {"trials": 6, "epochs": 2, "train_images": 20, "logit_losses": ["kd"], **settings} for r in runs)
        assert all(r["tune"]["trials"] == {"complete": 6, "pruned": 0, "diverged": 0} for r in runs)
    fixed = [["True", "", ""], ["False", "0.0", ""], ["False", "10.0", ""], ["False", "100.0", ""], ["False", "1000.0", ""]]
    for name in ("tuned_v2", "tuned_v3"):
        study = rt.work_dir(out / "res.json") / "R3" / f"{name}-seed0-{rt.student_dir(students[0])}" / "tune" / "trials.csv"
        rows = [row.split(",") for row in study.read_text().splitlines()]
        assert [row[5:8] for row in rows[1:6]] == fixed
        if name == "tuned_v2":
            assert rows[6][7] == ""  # drawn by TPE
        else:  # the refinement of the line the configured trial and the anchors scored
            line = {float(row[12] if row[6] == "" else row[6]): float(row[2]) for row in rows[1:6] if row[6] != "0.0"}
            assert rows[0][12] == "cosine_scale" and float(rows[6][7]) == refine_candidate(line) == float(rows[6][12])
    summary = json.loads((out / "res.json").read_text())
    ev = summary["pairs"]["R3"]["evidence"]
    assert ev["reference"] in ("default", "s400") and "fidelity" not in summary["pairs"]["R3"]
    assert ev["tuning_v2"]["goals"]["accuracy"]["n"] == 2 and ev["tuning_v2"]["minus_default"]["n"] == 2
    assert summary["tuner_v2"]["default"] is None and summary["tuner_v3"]["default"] is None  # R1 and R2 have no v2/v3 runs here
    assert ev["tuning_v3"]["minus_tuned_v2"]["n"] == 2


def test_the_tuner_v2_rule_and_r3_reference_by_hand() -> None:
    # R3's reference: the better of default and s400 on the cells both hold.
    recs = [final("default", 0, 50.0, "a"), final("default", 0, 60.0, "b"), final("s400", 0, 58.0, "a"), final("s400", 0, 53.0, "b"),
            final("s400", 1, 10.0, "a")]  # a cell default lacks: not compared
    assert rt.reference_recipe(recs, "R3") == "s400"  # 55.5 against 55.0
    recs[3] = final("s400", 0, 51.0, "b")
    assert rt.reference_recipe(recs, "R3") == "default"  # 54.5 against 55.0
    assert rt.reference_recipe([], "R1") == "s400" and rt.reference_recipe([], "R3") == "default"

    def pair(students: int, difference: float, n: int, cost: float, r3: bool = False) -> dict:
        v2 = {"cost_in_final_runs": {"mean": cost}, "minus_default": {"difference": difference if r3 else -9.0, "n": n}}
        if not r3:
            v2["minus_tuned_guarded"] = {"difference": difference, "n": n}
        return {"students": ["s"] * students, "evidence": {"tuning_v2": v2}}

    good = {"R1": pair(1, -0.3, 2, 0.5), "R2": pair(8, 0.1, 16, 0.6), "R3": pair(4, -0.3, 8, 0.7, r3=True)}
    assert rt.v2_verdict(good, [0, 1])["default"] is True
    assert rt.v2_verdict({**good, "R3": pair(4, -0.31, 8, 0.7, r3=True)}, [0, 1])["default"] is False
    assert rt.v2_verdict({**good, "R2": pair(8, 0.1, 16, 1.2)}, [0, 1])["default"] is False  # too costly
    assert rt.v2_verdict({**good, "R1": pair(1, 2.0, 1, 0.5)}, [0, 1])["default"] is None  # R1's seed 1 missing
    assert rt.v2_verdict({k: v for k, v in good.items() if k != "R3"}, [0, 1])["default"] is None


def test_the_tuner_v3_rule_by_hand() -> None:
    def pair(students: int, difference: float, n: int, cost: float) -> dict:
        return {"students": ["s"] * students,
                "evidence": {"tuning_v3": {"cost_in_final_runs": {"mean": cost}, "minus_tuned_v2": {"difference": difference, "n": n}}}}

    good = {"R1": pair(1, -0.3, 2, 0.6), "R2": pair(8, 0.0, 16, 0.7), "R3": pair(4, 0.2, 8, 0.8)}
    assert rt.v3_verdict(good, [0, 1])["default"] is True
    assert rt.v3_verdict({**good, "R1": pair(1, -0.31, 2, 0.6)}, [0, 1])["default"] is False
    assert rt.v3_verdict({**good, "R3": pair(4, 0.2, 8, 1.01)}, [0, 1])["default"] is False  # too costly
    assert rt.v3_verdict({**good, "R2": pair(8, 0.0, 15, 0.7)}, [0, 1])["default"] is None  # a cell missing
    assert rt.v3_verdict({k: v for k, v in good.items() if k != "R1"}, [0, 1])["default"] is None


def test_r1_runs_are_cifar10_distills_runs(tmp_path: Path, one_thread) -> None:
    """train.py with the benchmark's R1 command trains the weights cifar10_distill trains on the same settings: one protocol."""
    write_fake_cifar(tmp_path / "train.npz", 60)
    write_fake_cifar(tmp_path / "test.npz", 20, seed=1)
    save_random_teacher(tmp_path / "teacher.th")
    common = ["--train-file", str(tmp_path / "train.npz"), "--test-file", str(tmp_path / "test.npz"), "--val-images", "20",
              "--batch-size", "20", "--warmup-epochs", "0"]
    assert cifar10_distill.main([*common, "--teacher", "resnet20", "--teacher-checkpoint", str(tmp_path / "teacher.th"), "--student", "resnet20",
                                 "--train-images", "40", "--epochs", "1", "--seeds", "0", "--variants", "kd_stage_cosine", "--threads", "1",
                                 "--no-progress", "--out", str(tmp_path / "c10" / "res.json")]) == 0
    args = rt.parse_args([*common, "--r1-teacher", "resnet20", "--r1-teacher-checkpoint", str(tmp_path / "teacher.th"),
                          "--r1-train-images", "40", "--r1-epochs", "1", "--no-progress", "--out", str(tmp_path / "rt" / "res.json")])
    runs = rt.PairRuns(rt.protocols(args, ["R1"])["R1"], args, Path(args.out), {"tuned": (1, 1), "tuned_v2": (1, 1)}, ["kd"])
    unit = rt.Unit("final", "default", 0, "resnet20", 1)
    root = runs.fresh_root(unit)
    runs.call_train_py(runs.train_argv(unit, root))
    ours = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    theirs = torch.load(tmp_path / "c10" / "res.json.work" / "kd_stage_cosine-seed0" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    student = [k for k in theirs if k.startswith("student.")]
    assert student and all(torch.equal(ours[k], theirs[k]) for k in student)


# --------------------------------------------------------------------------- the summary, by hand


def final(recipe: str, seed: int, acc: float, student: str = "s", **extra) -> dict:
    return {"kind": "final", "recipe": recipe, "seed": seed, "student": student, "epochs": 15, "test_acc": acc, "seconds": 10.0, **extra}


def short(recipe: str, seed: int, epochs: int, acc: float, student: str = "s") -> dict:
    return {"kind": "short", "recipe": recipe, "seed": seed, "student": student, "epochs": epochs, "val_acc": acc, "seconds": 1.0}


def tune(seconds: float, final_seconds: float) -> dict:
    return {"tune": {"seconds": seconds, "final_seconds": final_seconds, "recipe": {"lr": 0.1}, "val_acc": 50.0, "trials": {"complete": 3},
                     "fallback": None}}


def test_evidence_arithmetic_by_hand() -> None:
    recs = [final("alone", 0, 70.0), final("alone", 1, 71.0), final("s400", 0, 80.0), final("s400", 1, 81.0),
            final("tuned", 0, 79.8, **tune(100.0, 200.0)), final("tuned", 1, 80.2, **tune(300.0, 200.0)),
            final("kd", 0, 74.0), final("kd", 1, 75.0), final("dkd_b8", 0, 75.5), final("dkd_b8", 1, 74.5), final("dkd_b2", 0, 76.0)]
    ev = rt.evidence_summary(recs, "R1")
    assert ev["rows"]["s400"]["gain_over_alone"] == pytest.approx(10.0)
    tuned = ev["rows"]["tuned"]
    assert tuned["test_acc"]["mean"] == pytest.approx(80.0) and tuned["gain_over_alone"] == pytest.approx(9.5)
    assert tuned["test_acc"]["std"] == pytest.approx(math.sqrt(0.08))  # the sample std of 79.8 and 80.2
    assert ev["rows"]["alone"]["gain_over_alone"] == 0.0 and "default" not in ev["rows"]  # a recipe without runs has no row
    goal = ev["goals"]["accuracy"]
    assert goal["difference"] == pytest.approx(-0.5) and goal["n"] == 2 and goal["met"]  # 80.0 vs 80.5: exactly at the tolerance
    assert ev["tuning"]["cost_in_final_runs"]["values"] == pytest.approx([0.5, 1.5])
    assert ev["goals"]["cost"]["mean"] == pytest.approx(1.0) and ev["goals"]["cost"]["met"] and ev["tuning"]["cost_in_final_runs"]["max"] == 1.5
    assert ev["tuning"]["seconds"] == {"tuning": 400.0, "final_runs": 400.0}
    assert ev["dkd_beside_kd"]["dkd_b8"]["difference"] == pytest.approx(0.5)  # +1.5 and -0.5
    assert ev["dkd_beside_kd"]["dkd_b2"]["difference"] == pytest.approx(2.0) and ev["dkd_beside_kd"]["dkd_b2"]["n"] == 1  # seed 0 only

    # R2: means over students; the goal on the cells both recipes hold; a miss by more than 0.3 fails.
    recs2 = [final("alone", 0, 40.0, "a"), final("alone", 0, 50.0, "b"), final("default", 0, 42.0, "a"), final("default", 0, 52.0, "b"),
             final("tuned", 0, 41.0, "a", **tune(30.0, 10.0)), final("tuned", 0, 52.5, "b", **tune(10.0, 10.0)), final("default", 1, 60.0, "a")]
    ev2 = rt.evidence_summary(recs2, "R2")
    assert ev2["rows"]["default"]["test_acc"]["per_seed"] == {"0": 47.0, "1": 60.0} and ev2["rows"]["default"]["gain_over_alone"] == 2.0
    assert ev2["goals"]["accuracy"]["difference"] == pytest.approx(-0.25) and ev2["goals"]["accuracy"]["met"]
    assert ev2["goals"]["cost"]["mean"] == pytest.approx(2.0) and not ev2["goals"]["cost"]["met"]
    assert "dkd_beside_kd" not in ev2
    recs2[4] = final("tuned", 0, 40.0, "a", **tune(30.0, 10.0))
    assert rt.evidence_summary(recs2, "R2")["goals"]["accuracy"]["met"] is False  # -0.75



def test_the_switching_guard_replay_by_hand(tmp_path: Path) -> None:
    """Each tuned run's study replayed under z = 1.645: kept on the configured recipe, it takes the default run's accuracy."""
    def tuned(acc: float, student: str, best: float, trial: int, configured: float | None) -> dict:
        record = final("tuned", 0, acc, student, **tune(10.0, 10.0))
        record["tune"].update(val_acc=best, trial=trial)
        if configured is not None:
            record["tune"].update(configured_trial=0, configured_val_acc=configured, val_images=1000)
        return record

    # a: 30.0 against 29.0 on 1,000 images, margin 1.645 × 100 × sqrt((0.3·0.7 + 0.29·0.71) / 1000) = 3.355: kept.
    #    Its record predates configured_val_acc, so the study's trials.csv in the work folder gives it.
    # b: 40.0 against 30.0, margin 3.49: the best trial replaces the configured recipe. c: the study chose trial 0 itself.
    study = tmp_path / "tuned-seed0-a" / "tune"
    study.mkdir(parents=True)
    (study / "trials.csv").write_text("trial,outcome,val_acc,epochs,seconds,configured\n0,complete,29.0,3,1.0,True\n"
                                      "1,complete,30.0,3,1.0,False\n2,pruned,10.0,1,1.0,False\n")
    recs = [final("alone", 0, 40.0, "a"), final("alone", 0, 50.0, "b"), final("alone", 0, 45.0, "c"),
            final("default", 0, 42.0, "a"), final("default", 0, 52.0, "b"), final("default", 0, 47.0, "c"),
            tuned(41.0, "a", 30.0, 1, None), tuned(52.5, "b", 40.0, 2, 30.0), tuned(47.0, "c", 35.0, 0, 35.0)]
    ev = rt.evidence_summary(recs, "R2", tmp_path, 1000)
    guard = ev["guard"]
    by = {d["student"]: d for d in guard["decisions"]}
    assert by["a"]["margin"] == pytest.approx(3.355, abs=1e-3) and by["a"]["kept_configured"] and by["a"]["configured_val_acc"] == 29.0
    assert by["b"]["margin"] == pytest.approx(3.4896, abs=1e-3) and not by["b"]["kept_configured"]
    assert by["c"]["kept_configured"] and by["c"]["study_chose_configured"] and not by["a"]["study_chose_configured"]
    assert guard["kept_configured"] == 2 and guard["runs"] == 3
    assert guard["premise"] == {"runs": 1, "max_abs_difference": 0.0, "rule": guard["premise"]["rule"]}
    # Guarded: a 42.0 (the default's), b 52.5 (its own), c 47.0; tuned: 41.0, 52.5, 47.0.
    assert ev["rows"]["tuned_guarded"]["test_acc"]["mean"] == pytest.approx((42.0 + 52.5 + 47.0) / 3)
    assert guard["guarded_minus_tuned"]["difference"] == pytest.approx(1.0 / 3)
    assert guard["accuracy_goal"]["difference"] == pytest.approx((0.0 + 0.5 + 0.0) / 3) and guard["accuracy_goal"]["met"]
    assert len(rt.evidence_summary(recs, "R2", tmp_path / "elsewhere", 1000)["guard"]["decisions"]) == 2

    # The rule: every pair complete (students × seeds) and guarded − tuned >= −0.3 on each.
    def pair(difference: float, n: int, students: int) -> dict:
        return {"students": ["s"] * students, "evidence": {"guard": {"guarded_minus_tuned": {"difference": difference, "n": n}}}}
    assert rt.guard_verdict({"R1": pair(-0.3, 2, 1), "R2": pair(0.8, 16, 8)}, [0, 1])["default"] is True
    assert rt.guard_verdict({"R1": pair(-0.4, 2, 1), "R2": pair(0.8, 16, 8)}, [0, 1])["default"] is False
    assert rt.guard_verdict({"R1": pair(-0.4, 1, 1), "R2": pair(0.8, 16, 8)}, [0, 1])["default"] is None  # R1's seed 1 missing
    assert rt.guard_verdict({"R2": pair(0.8, 16, 8)}, [0, 1])["default"] is None

def test_fidelity_rho_regret_and_the_safe_rule_by_hand() -> None:
    names = ["w", "x", "y", "z"]
    full = {"w": 10.0, "x": 30.0, "y": 20.0, "z": 40.0}
    recs = [final(n, 0, v) for n, v in full.items()]
    recs += [short(n, 0, 1, v) for n, v in zip(names, [1.0, 2.0, 3.0, 4.0])]  # ranks 1 2 3 4 against 1 3 2 4: ρ = 1 - 6·2/60 = 0.8
    recs += [short(n, 0, 3, v) for n, v in zip(names, [4.0, 3.0, 2.0, 1.0])]  # reversed: ρ = -0.8; picks w, 30 points below z
    recs += [short("z", 1, 1, 99.0), final("z", 1, 1.0)]  # seed 1 is not a fidelity seed here: ignored
    fid = rt.fidelity_summary(recs, names, [1, 3, 5], [0], tolerance=0.5)
    assert fid["1"]["rho"] == pytest.approx(0.8) and fid["1"]["best_short"] == "z" and fid["1"]["regret"] == 0.0 and fid["1"]["safe"]
    assert fid["3"]["rho"] == pytest.approx(-0.8) and fid["3"]["best_short"] == "w" and fid["3"]["regret"] == 30.0 and not fid["3"]["safe"]
    assert fid["5"]["cells"] == 0 and fid["5"]["rho"] is None and fid["5"]["safe"] is None
    assert fid["1"]["recipes"]["x"] == {"short_val_acc": 2.0, "full_test_acc": 30.0}

    # Means over the cells every compared recipe holds; a recipe that would leave none in common is left out.
    two = [final("w", 0, 10.0, "a"), final("w", 0, 20.0, "b"), short("w", 0, 1, 1.0, "a"), short("w", 0, 1, 3.0, "b"),
           final("x", 0, 30.0, "a"), final("x", 0, 40.0, "b"), short("x", 0, 1, 5.0, "a"), short("x", 0, 1, 7.0, "b"),
           final("y", 0, 5.0, "c"), short("y", 0, 1, 9.0, "c")]
    f2 = rt.fidelity_summary(two, ["w", "x", "y"], [1], [0], tolerance=0.3)["1"]
    assert f2["left_out"] == ["y"] and f2["cells"] == 2 and f2["recipes"]["w"] == {"short_val_acc": 2.0, "full_test_acc": 15.0}
    assert f2["rho"] is None and f2["safe"] is None  # two recipes: no ρ, no verdict

    verdicts = rt.safe_epochs({"R1": fid, "R2": {"1": {"safe": True}, "3": {"safe": True}}}, [1, 3, 5])
    assert verdicts == {"1": True, "3": False, "5": None}


def test_budget_rule() -> None:
    assert rt.trials_by_rule(15, 10_000, 3, 2_500, 0.75) == 15  # R1's defaults
    assert rt.trials_by_rule(10, 5_000, 3, 1_250, 0.75) == 10  # R2's
    assert rt.trials_by_rule(1, 40, 1, 1_000, 1.0) == 1  # a subset larger than the training set is all of it


@pytest.mark.parametrize("flags, message", [
    (["--parts", "evidence,bogus"], "--parts: unknown"),
    (["--pairs", "R4"], "--pairs: unknown"),
    (["--pairs", "R3", "--r3-only", "0:99"], "--r3-only '0:99' must satisfy 0 <= A < B <= 32"),
    (["--v2-tune-epochs", "0"], "--v2-tune-epochs 0"),
    (["--recipes", "default,dkd"], "--recipes: unknown"),
    (["--seeds", "0,0"], "--seeds"),
    (["--fidelity-epochs", "0,3"], "--fidelity-epochs"),
    (["--logit-losses", "kd,cosine"], "not registered logit losses"),
    (["--r2-only", "5:3"], "--r2-only"),
    (["--budget", "0"], "--budget"),
    (["--trials", "0"], "--trials 0"),
    (["--val-images", "0"], "--val-images 0"),
    (["--r1-tune-images", "1"], "--r1-tune-images 1"),
    (["--r1-teacher-checkpoint", "missing.th"], "--r1-teacher-checkpoint missing.th not found"),
    (["--budget", "0.01"], "the budget rule gives R2's tuned no trial"),
    (["--recipes", "tuned_v2", "--v2-tune-epochs", "9"], "the budget rule gives R2's tuned_v2 no trial"),
])
def test_bad_arguments_are_one_line(tiny: list[str], flags: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "PairRuns", lambda *a, **k: pytest.fail("data were read before the arguments were checked"))
    with pytest.raises(DasError, match=message) as err:
        rt.main([*tiny, *flags])
    assert "\n" not in str(err.value)


def test_a_v2_run_on_the_default_recipe_is_replayed_as_the_default_run() -> None:
    """Same recipe, other thread count: the replay takes the default run's accuracy; a switched run keeps its own."""
    default = rt.model_recipe("default", 0.05)
    other = {**default, "lr": 0.1}

    def v2(acc: float, student: str, recipe: dict) -> dict:
        return final("tuned_v2", 0, acc, student, tune={"recipe": recipe, "seconds": 1.0, "final_seconds": 2.0, "val_acc": 1.0,
                                                        "trials": {}, "fallback": None, "kept": None})
    recs = [final("default", 0, 40.0, "a"), final("default", 0, 50.0, "b"), v2(41.5, "a", default), v2(55.0, "b", other)]
    replay = rt.configured_replay(recs, "tuned_v2", 0.05)
    assert replay["mean"] == pytest.approx((40.0 + 55.0) / 2) and replay["chose_default"] == 1
    assert replay["own_minus_default_where_same"]["mean"] == pytest.approx(1.5)
    assert rt.evidence_summary(recs, "R2", lr=0.05)["tuning_v2"]["default_replayed"] == replay
