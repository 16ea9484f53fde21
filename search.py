"""Search for the student architecture that will distil best from a teacher, without training.

    python search.py                              # the offline quickstart (configs/quickstart.yaml)
    python search.py --config configs/search/cifar10_resnet56.yaml
    python search.py --study.trials 200 --budget.max_params 300000
    python search.py --print_config               # every option, with its current value

Rerunning the same command resumes the study in its run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from das.cli import guarded
from das.data import DasDataModule
from das.search import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig, run_search

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="search.py", description=__doc__.splitlines()[0], default_config_files=[str(DEFAULT_CONFIG)])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (defaults: configs/quickstart.yaml)")
    parser.add_argument("--run_dir", type=str, default="runs/quickstart", help="where the study and results are written")
    parser.add_argument("--device", type=str, default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_class_arguments(DasDataModule, "data")
    parser.add_class_arguments(TeacherConfig, "teacher")
    parser.add_class_arguments(SpaceConfig, "space")
    parser.add_class_arguments(BudgetConfig, "budget")
    parser.add_class_arguments(StudyConfig, "study")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    cfg = parser.parse_args(argv)
    init = parser.instantiate(cfg)
    summary = run_search(init.run_dir, init.data, init.teacher, init.space, init.budget, init.study, init.device)
    run_dir = Path(summary["run_dir"])
    parser.save(cfg, run_dir / "search_config.yaml", overwrite=True, skip_validation=True)
    best = summary["best"]
    print(f"\nbest student: {best['arch']}")
    print(f"  {init.study.objective} = {best[init.study.objective]:.5g}, {best['params']:,} params, {best['flops']:,} FLOPs")
    print(f"{summary['trials_finished']} trials, {summary['distinct_archs']} distinct architectures, {summary['seconds']} s")
    print(f"wrote {run_dir}/: best_arch.json, leaderboard.csv, scores.png, search_summary.json, search_config.yaml, study.journal")
    if Path(init.run_dir) == Path("runs/quickstart"):
        print("next: python train.py   (distils the best student and compares it with training it alone)")
    else:
        print(f"next: python train.py --model.student {run_dir}/best_arch.json --model.teacher {init.teacher.spec} "
              f"--model.teacher_checkpoint {summary['teacher_checkpoint']}  (plus your data settings)")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
