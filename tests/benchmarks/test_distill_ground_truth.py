"""benchmarks/distill_ground_truth.py on tiny fake CIFAR data: the stratified sample, resume, the noise and fidelity studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import distill_ground_truth as gt
from das.calibrate import population as population_module
from das.errors import DasError
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar
from das.spaces import create_space


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """A 96-image train / 60-image test npz pair and an untrained ResNet-20 saved as "the teacher"."""
    write_fake_cifar(tmp_path / "train.npz", 96)
    write_fake_cifar(tmp_path / "test.npz", 60, seed=1)
    save_random_teacher(tmp_path / "teacher.th")
    return ["--train-file", str(tmp_path / "train.npz"), "--test-file", str(tmp_path / "test.npz"),
            "--teacher", "resnet20", "--teacher-checkpoint", str(tmp_path / "teacher.th"),
            "--students", "3", "--candidates", "40", "--train-images", "64", "--test-images", "40", "--epochs", "1",
            "--batch-size", "32", "--views", "2", "--warmup-epochs", "0", "--threads", "1", "--no-progress"]


def forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a finished student was trained again")

    monkeypatch.setattr(population_module, "train_pair", refuse)


def test_stratified_sample_spans_the_range_and_fills_empty_bins() -> None:
    # Three clusters with gaps between them: most of the 8 equal-width bins are empty.
    params = [100] * 5 + [101] * 5 + [1200] * 20 + [10000] * 3
    picked, bins, edges = gt.stratified_sample(params, 8, seed=0)
    assert len(set(picked)) == 8 and len(edges) == 9
    chosen = [params[i] for i in picked]
    assert chosen == sorted(chosen) and chosen[0] in (100, 101) and chosen[-1] == 10000
    assert bins[0] == 0 and bins[-1] == 7
    # 3 bins hold members; the 5 students of empty bins went one per round to the fullest bins (19, 9, then 2 left).
    assert bins == [0, 0, 0, 4, 4, 4, 7, 7]
    assert gt.stratified_sample(params, 8, seed=0)[0] == picked
    with pytest.raises(DasError, match="more than the 33 candidate"):
        gt.stratified_sample(params, 34, seed=0)


def test_disconnected_nb201_cells_are_not_students() -> None:
    space = create_space("nb201", C=4, N=1)
    cut = space.spec(arch="|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")  # node 2 reads node 0, node 3 reads 2: connected
    dead = space.spec(arch="|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")  # node 2 gets nothing, node 3 only node 2
    assert gt.trainable(cut) and not gt.trainable(dead)
    assert all(gt.trainable(s) for s in gt.candidates(space, 0, 0))


def test_helpers_spread_the_subsets() -> None:
    assert gt.evenly_spaced(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]
    assert gt.evenly_spaced(3, 1) == [1]
    order = gt.spread_order(7)
    assert order[0] == 3 and sorted(order) == list(range(7))


def test_nb201_population_resumes_and_adds_noise_and_fidelity(tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "gt_nb201.json"
    base = [*tiny, "--population", "nb201", "--space-args", "{C: 4, N: 1}", "--out", str(out)]
    assert gt.main(base) == 0
    assert "expected:" in capsys.readouterr().out

    sample = json.loads((tmp_path / "gt_nb201.students.json").read_text())
    params = [s["params"] for s in sample["students"]]
    edges = np.exp(sample["bin_edges_log_params"])
    assert params == sorted(params) and len(set(s["key"] for s in sample["students"])) == 3
    assert params[0] < edges[1] and params[-1] >= edges[-2]  # the lowest and the highest bin each gave a student

    lines = [json.loads(line) for line in (tmp_path / "gt_nb201.jsonl").read_text().splitlines()]
    assert lines[0]["settings"]["recipe"]["losses"] == gt.DEFAULT_LOSSES and len(lines) == 4
    result = json.loads(out.read_text())
    assert result["trained"] == result["sampled"] == 3 and result["teacher"]["test_images"] == 40
    assert 0 <= result["teacher"]["test_acc"] <= 100
    for s in result["students"]:
        assert {"spec", "params", "flops", "distilled_acc", "alone_acc", "gain"} <= set(s)
        assert s["gain"] == pytest.approx(s["distilled_acc"] - s["alone_acc"])
    assert result["timing"]["seconds_total"] > 0 and result["timing"]["seconds_per_student_mean"] > 0
    assert result["settings"]["machine"]["cores"] and "seed_noise" not in result and "fidelity" not in result

    # The noise and fidelity studies get files of their own; the ground truth is not retrained.
    ground_truth = (tmp_path / "gt_nb201.jsonl").read_text()
    studies = [*base, "--seeds", "0,1", "--noise-students", "2", "--fidelity-students", "2", "--long-factor", "2"]
    assert gt.main(studies) == 0
    assert (tmp_path / "gt_nb201.jsonl").read_text() == ground_truth
    assert len((tmp_path / "gt_nb201.seed1.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "gt_nb201.epochs2.jsonl").read_text().splitlines()) == 3
    result = json.loads(out.read_text())
    noise = result["seed_noise"]
    assert noise["per_seed"][0]["seed"] == 1 and noise["per_seed"][0]["n"] == 2
    assert noise["per_seed"][0]["rho_gain"] is None  # 2 pairs give no ρ
    assert len(noise["gain_std_per_student"]) == 2 and noise["gain_std_mean"] >= 0
    fidelity = result["fidelity"][0]
    assert (fidelity["epochs_short"], fidelity["epochs_long"], fidelity["n"]) == (1, 2, 2)
    assert "rho_distilled_acc" in fidelity
    assert [st["name"] for st in result["settings"]["stages"]] == ["ground_truth", "noise", "fidelity"]

    # Rerunning trains nothing and leaves every results file as it was.
    files = sorted(tmp_path.glob("gt_nb201*.jsonl"))
    before = [f.read_text() for f in files]
    forbid_training(monkeypatch)
    assert gt.main(studies) == 0
    assert [f.read_text() for f in files] == before

    # Another sample is refused, in one line naming what differs.
    with pytest.raises(DasError, match=r"other settings.*sample_seed") as err:
        gt.main([*studies, "--sample-seed", "1"])
    assert "\n" not in str(err.value)


def test_resnet_cifar_population_and_its_rerun(tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gt_resnet.json"
    assert gt.main([*tiny, "--population", "resnet_cifar", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["trained"] == 3 and all(s["spec"]["space"] == "resnet_cifar" for s in result["students"])
    params = [s["params"] for s in result["students"]]
    assert params == sorted(params) and params[0] < params[-1]
    # A rerun reads its sample back (the space's choice lists are tuples in memory, lists on disk) and trains nothing.
    forbid_training(monkeypatch)
    assert gt.main([*tiny, "--population", "resnet_cifar", "--out", str(out)]) == 0


def test_smaller_images_need_a_teacher_trained_for_them(tiny: list[str]) -> None:
    at = tiny.index("--teacher-checkpoint")
    args = tiny[:at] + tiny[at + 2:]
    with pytest.raises(DasError, match=r"--image-size 16 needs a --teacher-checkpoint") as err:
        gt.main([*args, "--population", "nb201", "--image-size", "16"])
    assert "\n" not in str(err.value)


def test_only_trains_a_slice_of_the_order(tiny: list[str], tmp_path: Path) -> None:
    out = tmp_path / "gt_slice.json"
    assert gt.main([*tiny, "--population", "nb201", "--only", "1:3", "--seeds", "0,1", "--noise-students", "2", "--out", str(out)]) == 0
    order = [json.loads(line)["arch"] for line in (tmp_path / "gt_slice.jsonl").read_text().splitlines()[1:]]
    sample = json.loads((tmp_path / "gt_slice.students.json").read_text())["students"]
    expected = [sample[i]["arch"] for i in gt.spread_order(len(sample))[1:3]]
    assert order == expected and not (tmp_path / "gt_slice.seed1.jsonl").exists()  # the noise stage is not run
    for bad in ("3:1", "0:4", "x"):
        with pytest.raises(DasError, match=r"--only") as err:
            gt.main([*tiny, "--population", "nb201", "--only", bad, "--out", str(out)])
        assert "\n" not in str(err.value)


def test_fidelity_first_trains_the_fidelity_subset_short_and_long_before_the_rest(tiny: list[str], tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gt_ff.json"
    trained: list[tuple[int, int]] = []  # (epochs, params) of every pair trained, in order
    real = population_module.train_pair

    def record(student, cache, data, recipe, *args, **kwargs):
        trained.append((recipe.epochs, sum(p.numel() for p in student.parameters())))
        return real(student, cache, data, recipe, *args, **kwargs)

    monkeypatch.setattr(population_module, "train_pair", record)
    assert gt.main([*tiny, "--population", "nb201", "--fidelity-students", "2", "--long-factor", "2", "--fidelity-first", "--out", str(out)]) == 0
    fid = [json.loads(line)["params"] for line in (tmp_path / "gt_ff.epochs2.jsonl").read_text().splitlines()[1:]]
    assert len(fid) == 2 and [e for e, _ in trained[:4]] == [1, 1, 2, 2] and sorted(p for _, p in trained[:4]) == sorted(fid * 2)
    assert len(trained) == 5 and trained[4][0] == 1 and trained[4][1] not in fid  # then the third student, once, short
    assert json.loads(out.read_text())["fidelity"][0]["n"] == 2
    with pytest.raises(DasError, match="--fidelity-first needs --fidelity-students"):
        gt.main([*tiny, "--population", "nb201", "--fidelity-first", "--out", str(tmp_path / "x.json")])


def test_stages_runs_only_the_named_stages(tiny: list[str], tmp_path: Path) -> None:
    out = tmp_path / "gt_st.json"
    args = [*tiny, "--population", "nb201", "--seeds", "0,1", "--noise-students", "1", "--fidelity-students", "1",
            "--long-factor", "2", "--out", str(out)]
    assert gt.main([*args, "--stages", "fidelity"]) == 0
    assert (tmp_path / "gt_st.epochs2.jsonl").exists()
    assert not (tmp_path / "gt_st.jsonl").exists() and not (tmp_path / "gt_st.seed1.jsonl").exists()
    assert gt.main([*args, "--stages", "ground_truth,noise"]) == 0
    summary = json.loads(out.read_text())
    assert summary["trained"] == 3 and summary["fidelity"][0]["n"] == 1 and summary["seed_noise"]["per_seed"][0]["n"] == 1
    for bad, match in ((["--stages", "long"], "--stages 'long' must be"), (["--stages", "fidelity", "--only", "0:1"], "do not combine")):
        with pytest.raises(DasError, match=match) as err:
            gt.main([*args, *bad])
        assert "\n" not in str(err.value)


def test_short_runs_are_distilled_only_judged_on_validation_images_and_resume(tiny: list[str], tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gt_short.json"
    base = [*tiny, "--population", "nb201", "--space-args", "{C: 4, N: 1}", "--out", str(out), "--short-epochs", "1", "--val-images", "16"]
    assert gt.main(base) == 0
    short = tmp_path / "gt_short.short1.jsonl"
    settings, records = gt.read_results(short)
    assert len(records) == 3 and all(r["alone_acc"] is None and r["gain"] is None for r in records)
    assert settings["runs"] == "distilled only" and settings["recipe"]["epochs"] == 1
    summary = json.loads(out.read_text())
    assert summary["short_runs"][0]["n"] == 3 and summary["short_runs"][0]["val_images"] == settings["test_images"]

    args = gt.parse_args(base)
    data, dm = gt._load(args)
    val = gt.validation_data(args, data, dm)
    trained = {bytes(x.numpy().tobytes()) for x in data.train.images}
    assert len(val.test) == settings["test_images"] and 16 <= len(val.test) <= 16 + 10  # stratified: rounded per class
    assert not any(bytes(x.numpy().tobytes()) in trained for x in val.test.images)  # never trained on
    assert torch.equal(val.train.images, data.train.images)

    forbid_training(monkeypatch)
    monkeypatch.setattr(population_module, "train_student", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    assert gt.main(base) == 0
    with pytest.raises(DasError, match="--val-images 40"):
        gt.main([*base[:-2], "--val-images", "40", "--out", str(tmp_path / "other.json")])


def test_short_runs_may_use_another_teacher_but_the_summary_keeps_the_ground_truths(tiny: list[str], tmp_path: Path) -> None:
    out = tmp_path / "gt_other.json"
    base = [*tiny, "--population", "nb201", "--space-args", "{C: 4, N: 1}", "--out", str(out)]
    assert gt.main(base) == 0
    ground_truth_teacher = json.loads(out.read_text())["teacher"]
    save_random_teacher(tmp_path / "refit.th", seed=7)
    refit = [*base, "--teacher-checkpoint", str(tmp_path / "refit.th")]
    with pytest.raises(DasError, match="only --stages short"):
        gt.main([*refit, "--short-epochs", "1", "--val-images", "16"])  # the ground truth stage would mix two teachers
    assert gt.main([*refit, "--short-epochs", "1", "--val-images", "16", "--stages", "short"]) == 0
    summary = json.loads(out.read_text())
    assert summary["teacher"] == ground_truth_teacher
    short = summary["short_runs"][0]
    assert short["n"] == 3 and short["same_teacher_as_ground_truth"] is False and short["teacher_weights"] != ground_truth_teacher["weights"]
