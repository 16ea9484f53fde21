"""Search for the student architecture that will distil best from a teacher, without training.

    python search.py                              # the offline quickstart (configs/quickstart.yaml)
    python search.py --study.trials 10            # the quickstart with 10 trials
    python search.py --config configs/search/cifar10_resnet56.yaml
    python search.py --teacher.spec my_models.nets:big_cnn --teacher.checkpoint big_cnn.pt --data.dataset npz ...
    python search.py --calibrate.students 8 --calibrate.epochs 3    # first fit a selection rule on 8 distilled students
    python search.py --race.finalists 4 --race.epochs 5             # then race the top 4 and the largest, keep the best
    python search.py --workers 2                  # two worker processes on one study (this machine's cores split)
    python search.py --study.storage postgresql://USER@HOST/DB --workers 4 --first_worker 4   # join a study from another machine
    python search.py --print_config               # every option, with its current value

Where the settings come from: each option's default is the code's (shown by --help). Only a
command that names no --config, no dataset (--data.dataset) and no teacher (--teacher.spec,
--teacher.checkpoint) is the quickstart: configs/quickstart.yaml is read first, then the flags.
A --config FILE is read over the code's defaults, never over the quickstart; flags after it
override it. The run directory is --run_dir, else the config's run_dir, else runs/<config file
name> (runs/search without a config).

Rerunning the same command resumes the study in its run directory; several processes (--workers N,
or several commands, on one machine or, with an RDB --study.storage, on several) together score
study.trials distinct architectures within the budget. Exit status: 0 done, 1 a mistake in the
command or its config (one line; --debug for a traceback), or a worker failed before the study
had its trials, 130 interrupted (results so far are written).
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from das.cli import INTERRUPTED, guarded, with_quickstart
from das.data import DasDataModule
from das.errors import DasError
from das.evaluate import near_chance
from das.search.next_step import train_command
from das.search import BudgetConfig, CalibrateConfig, RaceConfig, SpaceConfig, StudyConfig, TeacherConfig, run_search

QUICKSTART = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"
#: A command with any of these says what it searches for, so the quickstart does not apply.
OWN_RUN_FLAGS = ("--data", "--data.dataset", "--teacher", "--teacher.spec", "--teacher.checkpoint")
#: The run directory of a command with neither --run_dir nor a config.
DEFAULT_RUN_DIR = "runs/search"


def build_parser() -> ArgumentParser:
    description, _, epilog = __doc__.partition("Where the settings come from")
    parser = ArgumentParser(prog="search.py", description=description.splitlines()[0], exit_on_error=False,
                            epilog="Where the settings come from" + epilog)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config, read over the code's defaults (not over the quickstart)")
    parser.add_argument("--run_dir", type=str | None, default=None,
                        help="where the study and results are written (default: the config's run_dir, else runs/<config name>, else runs/search)")
    parser.add_argument("--device", type=str, default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes scoring trials on this machine, each on its share of the CPU threads "
                             "(and its own GPU when several are visible); more than the trials left is clamped")
    parser.add_argument("--first_worker", type=int, default=0,
                        help="index of this command's first worker: worker i samples with seed study.seed + i, so give "
                             "each machine's command its own range (0, then N, then 2N, ...)")
    parser.add_class_arguments(DasDataModule, "data")
    parser.add_class_arguments(TeacherConfig, "teacher")
    parser.add_class_arguments(SpaceConfig, "space")
    parser.add_class_arguments(BudgetConfig, "budget")
    parser.add_class_arguments(StudyConfig, "study")
    parser.add_class_arguments(CalibrateConfig, "calibrate")
    parser.add_class_arguments(RaceConfig, "race")
    return parser


def parse(parser: ArgumentParser, argv: list[str]):
    """Parse ``argv`` under the rule above; a bad flag or config value is a one-line DasError."""
    argv = with_quickstart(argv, QUICKSTART, OWN_RUN_FLAGS)
    try:
        cfg = parser.parse_args(argv)
    except ArgumentError as err:
        hint = " (YAML needs a space after ':', e.g. '{C: 16, N: 5}')" if "Expected a <class 'dict'>" in str(err) else ""
        raise DasError(f"{' '.join(str(err).split())}{hint}; see python search.py --help") from None
    drop_foreign_space_args(cfg, argv)
    if cfg.run_dir is None:
        configs = cfg.get("config") or []
        cfg.run_dir = f"runs/{Path(str(configs[-1])).stem}" if configs else DEFAULT_RUN_DIR
    return cfg


def drop_foreign_space_args(cfg, argv: list[str]) -> None:
    """A command that changes only ``space.name`` drops the config's ``space.args``: they were written for the config's space.

    ``--space.name timm`` on the quickstart would otherwise fail on the quickstart's nb201 ``C``,
    an argument the user never typed. Args given on the command line are kept.
    """
    typed = {arg.split("=", 1)[0] for arg in argv}
    configs = cfg.get("config") or []
    if "--space.name" not in typed or typed & {"--space", "--space.args"} or not configs or not cfg.space.args:
        return
    written = (yaml.safe_load(Path(str(configs[-1])).read_text()) or {}).get("space") or {}
    if written.get("name", cfg.space.name) == cfg.space.name or written.get("args") != cfg.space.args:
        return
    print(f"note: {Path(str(configs[-1])).name}'s space.args {cfg.space.args} belong to its space {written.get('name')}; "
          f"{cfg.space.name} starts from its own defaults (set them with --space.args '{{...}}')")
    cfg.space.args = {}


def main(argv: list[str]) -> int:
    parser = build_parser()
    cfg = parse(parser, argv)
    init = parser.instantiate(cfg)
    configs = [str(c) for c in cfg.get("config") or []]
    print(f"search: settings from {' then '.join(configs) if configs else 'the code defaults'} and the command line; run_dir {init.run_dir}")
    summary = run_search(init.run_dir, init.data, init.teacher, init.space, init.budget, init.study, init.device,
                         calibrate=init.calibrate, workers=init.workers, first_worker=init.first_worker, race=init.race)
    run_dir = Path(summary["run_dir"])
    parser.save(cfg, run_dir / "search_config.yaml", overwrite=True, skip_validation=True)
    best = summary["best"]
    if best is not None:
        print(f"\nbest student: {best['arch']}")
        print(f"  {summary['objective']} = {best[summary['objective']]:.5g}, {best['params']:,} params, {best['flops']:,} FLOPs")
        if summary["race"]:
            print(f"  won the race of {len(summary['race']['finalists'])} finalists: {best['race_val_acc']:.2f}% validation accuracy "
                  f"after {best['race_epochs']} epoch(s) ({summary['race']['minutes']:.1f} min of racing)")
    print(f"teacher: {init.teacher.spec}, {summary['teacher_test_acc']:.2f}% top-1 on the held-out test split")
    weak = near_chance(summary["teacher_test_acc"], init.data.num_classes)
    if weak:
        remedy = (f"train it longer (--teacher.epochs, now {init.teacher.epochs}) in a new --run_dir"
                  if init.teacher.checkpoint is None else "give a trained --teacher.checkpoint")
        print(f"warning: teacher {init.teacher.spec} is {weak}: students ranked against it are ranked against noise; {remedy}",
              file=sys.stderr)
    print(f"{summary['scored']} distinct architectures scored in {summary['trials']} trials ({summary['duplicates']} drew one "
          f"already scored, {summary['infeasible']} were over budget and not scored), {summary['seconds']} s")
    calibrated = ", selection.json, calibration.csv, calibration_students.csv, calibration.png" if summary["calibration"] else ""
    pareto = "pareto.json, " if summary["pareto"] is not None else ""
    calibrated += ", race/" if summary["race"] else ""
    journal = ", study.journal" if init.study.storage is None else ""
    print(f"wrote {run_dir}/: best_arch.json, {pareto}leaderboard.csv, plots/, search_summary.json, search_config.yaml{journal}{calibrated}")
    if summary["pareto"]:
        print(f"pareto front: {summary['pareto']} students in {run_dir}/pareto.json; distil one with --model.student {run_dir}/pareto.json#N")
    if summary["interrupted"]:
        return INTERRUPTED
    if Path(init.run_dir) == Path("runs/quickstart"):
        print("next: python train.py   (distils the best student and compares it with training it alone)")
    else:
        print("next: " + train_command(run_dir, init.teacher.spec, summary["teacher_checkpoint"], dict(init.data.hparams), configs,
                                       input_shape=init.data.input_shape))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
