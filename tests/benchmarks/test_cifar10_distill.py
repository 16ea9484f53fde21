"""benchmarks/cifar10_distill.py on a tiny fake CIFAR pair: one line per run, resume, refusal, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cifar10_distill
from das.errors import DasError
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar

# Three of the table's variants: the baseline, logits only, and features on several pairs.
VARIANTS = ("alone", "kd", "kd_stage_cosine")


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """A 96-image train / 40-image test npz pair and an untrained ResNet-20 saved as "the teacher"."""
    write_fake_cifar(tmp_path / "train.npz", 96)
    write_fake_cifar(tmp_path / "test.npz", 40, seed=1)
    save_random_teacher(tmp_path / "teacher.th")
    return ["--train-file", str(tmp_path / "train.npz"), "--test-file", str(tmp_path / "test.npz"),
            "--teacher", "resnet20", "--teacher-checkpoint", str(tmp_path / "teacher.th"), "--student", "resnet20",
            "--train-images", "60", "--val-images", "20", "--epochs", "1", "--batch-size", "16", "--limit-batches", "2",
            "--seeds", "0,1", "--warmup-epochs", "0", "--variants", ",".join(VARIANTS), "--threads", "1", "--no-progress", "--out", str(tmp_path / "res.json")]


def test_runs_resume_refuse_and_summary(tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    runs_path = tmp_path / "res.runs.jsonl"
    assert cifar10_distill.main(tiny) == 0
    lines = [json.loads(line) for line in runs_path.read_text().splitlines()]
    assert lines[0]["settings"]["train_images"] == 60
    runs = [r for r in lines if r.get("kind") == "run"]
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted((v, s) for v in VARIANTS for s in (0, 1))
    assert all(0 <= r["test_acc"] <= 100 and r["images_per_s"] > 0 and r["val_acc"] is not None for r in runs)
    assert sum(r.get("kind") == "teacher" for r in lines) == 1

    result = json.loads((tmp_path / "res.json").read_text())
    assert result["complete"] and result["settings"]["sizes"] == {"train": 60, "val": 20, "test": 40}  # the whole test file
    assert set(result["results"]) == set(VARIANTS)
    for name, res in result["results"].items():
        assert res["n"] == 2 and res["test_acc"]["std"] is not None
        assert res["gain_over_alone"] == pytest.approx(res["test_acc"]["mean"] - result["results"]["alone"]["test_acc"]["mean"])
    assert result["results"]["alone"]["gain_over_alone"] == 0
    assert "kd_stage_cosine" in capsys.readouterr().out

    # A rerun trains nothing and leaves the runs file as it was.
    before = runs_path.read_text()
    monkeypatch.setattr(cifar10_distill, "fit_and_test", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert cifar10_distill.main(tiny) == 0
    assert runs_path.read_text() == before

    # A command naming fewer variants still summarises every recorded one, with its gain over alone.
    only_kd = [*tiny[:tiny.index("--variants") + 1], "kd", *tiny[tiny.index("--variants") + 2:]]
    assert cifar10_distill.main(only_kd) == 0
    again = json.loads((tmp_path / "res.json").read_text())
    assert set(again["results"]) == set(VARIANTS) and again["results"]["kd"]["gain_over_alone"] == result["results"]["kd"]["gain_over_alone"]

    # Other settings are refused, in one line naming what differs.
    with pytest.raises(DasError, match=r"other settings.*epochs") as err:
        cifar10_distill.main([*tiny, "--epochs", "2"])
    assert "\n" not in str(err.value)
    assert runs_path.read_text() == before


def test_bad_variant_lists_the_known_ones(tiny: list[str]) -> None:
    with pytest.raises(DasError, match="kd_cosine"):
        cifar10_distill.main([*tiny, "--variants", "kd,relation"])


def test_every_feature_variant_names_its_pairing() -> None:
    """The table's rows were measured under one pairing each; a row that leaves it to DistillModule's
    default would record another pairing's results under its label whenever that default moves."""
    from das.distill import LOSSES

    feature_terms = {name for name in LOSSES.names() if any("features" in need for need in LOSSES.get(name).needs)}
    assert feature_terms >= {"cosine", "relation"}
    for name, changes in cifar10_distill.VARIANTS.items():
        if feature_terms & set(changes.get("losses", {})):
            assert changes.get("feature_pairs") in ("final", "stages"), name
    assert cifar10_distill.VARIANTS["kd_cosine_s400"]["feature_pairs"] == "final"
    assert cifar10_distill.VARIANTS["kd_stage_cosine_s400"]["feature_pairs"] == "stages"
