"""build_model: every accepted student form (architecture file, leaderboard row, inline JSON,
registered name, timm name, package.module:function) and the leaderboard-row errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from das.errors import DasError
from das.models import arch_spec, build_model
from das.search.results import leaderboard, write_leaderboard
from das.storage import journal_storage
from das.spec import ArchSpec

ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
]
PROXIES = ["diswot"]


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def write_search(run_dir: Path) -> list[ArchSpec]:
    """What search.py leaves in a run directory: a study journal and its leaderboard.csv (two rows)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    specs = [ArchSpec.make("nb201", {"arch": arch}, {"C": 4, "N": 1}) for arch in ARCHS]
    study = optuna.create_study(storage=journal_storage(run_dir / "study.journal"), study_name="das", direction="maximize")
    for score, spec in zip((2.0, 1.0), specs):  # the first scores higher: rank 1
        attrs = {"arch": spec.to_json(), "scores": {"diswot": score}, "params": params(spec.build(10)), "flops": 0}
        study.add_trial(optuna.trial.create_trial(value=score, user_attrs=attrs, constraints={"params": -1.0}))
    write_leaderboard(leaderboard(study, PROXIES), PROXIES, run_dir / "leaderboard.csv")
    return specs


def test_leaderboard_row_builds_that_rows_architecture(tmp_path: Path) -> None:
    specs = write_search(tmp_path / "run")
    csv_path = tmp_path / "run" / "leaderboard.csv"
    assert "spec" not in csv_path.read_text().splitlines()[0]  # the CSV alone does not rebuild a spec
    for rank, spec in enumerate(specs, start=1):
        assert arch_spec(f"{csv_path}#{rank}") == spec
    model = build_model(f"{csv_path}#2", 10)
    assert params(model) == params(specs[1].build(10)) != params(specs[0].build(10))


def test_leaderboard_row_follows_the_storage_in_search_config(tmp_path: Path) -> None:
    specs = write_search(tmp_path / "elsewhere")
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "elsewhere" / "leaderboard.csv").rename(run / "leaderboard.csv")
    journal = tmp_path / "elsewhere" / "study.journal"
    (run / "search_config.yaml").write_text(f"study:\n  storage: {journal}\n  study_name: das\n")
    assert arch_spec(f"{run / 'leaderboard.csv'}#1") == specs[0]


@pytest.mark.parametrize(
    "row, words",
    [
        ("#3", ["has 2 rows (ranks 1–2)", "#3 is out of range"]),
        ("#two", ["must be PATH.csv#N", "leaderboard.csv#1"]),
        ("#0", ["must be PATH.csv#N"]),
        ("", ["must be PATH.csv#N"]),
    ],
)
def test_leaderboard_row_errors_are_one_line(tmp_path: Path, row: str, words: list[str]) -> None:
    write_search(tmp_path)
    with pytest.raises(DasError) as err:
        build_model(f"{tmp_path / 'leaderboard.csv'}{row}", 10)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_missing_leaderboard_and_rows_without_a_spec(tmp_path: Path) -> None:
    with pytest.raises(DasError, match="does not exist; run search.py first"):
        build_model(str(tmp_path / "nowhere" / "leaderboard.csv#1"), 10)
    write_search(tmp_path / "run")
    alone = tmp_path / "alone"
    alone.mkdir()
    (tmp_path / "run" / "leaderboard.csv").rename(alone / "leaderboard.csv")  # copied away from its study
    with pytest.raises(DasError, match=r"row #1 of .* has no architecture spec: .*study.journal.* does not exist"):
        build_model(f"{alone / 'leaderboard.csv'}#1", 10)
    (alone / "no_trial.csv").write_text("rank,trial,arch,diswot\n1,,nb201(arch=x),1.0\n")
    with pytest.raises(DasError, match=r"row #1 of .*\(nb201\(arch=x\)\) has no architecture spec: it names no trial"):
        build_model(f"{alone / 'no_trial.csv'}#1", 10)
    (alone / "scores.csv").write_text("name,score\na,1\n")
    with pytest.raises(DasError, match="not a search leaderboard"):
        build_model(f"{alone / 'scores.csv'}#1", 10)


USER_MODULE = """
from torch import nn

def small_cnn(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))
"""


def test_timm_name_and_module_function_build_as_students(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    student = build_model("timm:resnet18", 10)
    assert student.get_classifier().out_features == 10
    assert arch_spec("timm:resnet18") is None
    name = "das_user_student_module"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert build_model(f"{name}:small_cnn", 10)[-1].out_features == 10
    finally:
        sys.modules.pop(name, None)


def test_inline_json_and_file_build_the_same_student(tmp_path: Path) -> None:
    spec = ArchSpec.make("nb201", {"arch": ARCHS[0]}, {"C": 4, "N": 1})
    spec.save(tmp_path / "best_arch.json")
    assert arch_spec(spec.to_json()) == arch_spec(str(tmp_path / "best_arch.json")) == spec
    assert params(build_model(str(tmp_path / "best_arch.json"), 10)) == params(spec.build(10))
