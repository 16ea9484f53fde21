"""prune.py's command: prune a student (masks at initialisation, or channels by BatchNorm γ) and train it.

It is train.py's LightningCLI (:class:`das.distill.command.DasCLI`: the same ``model``, ``data``
and ``trainer`` options, checked before any data is read) with a ``prune`` section
(:class:`das.prune.config.PruneConfig`) and no baseline. The work is in
:mod:`das.prune.masked_run` (at-init methods) and :mod:`das.prune.slim_run` (slim); what a run
writes, and how ``--ckpt_path last`` resumes it stage by stage, in :mod:`das.prune.runfiles`.

Settings come from the code's signatures, then one config file, then flags. A command with no
``--config``, no dataset and no teacher is a quickstart: ``configs/prune/quickstart_px.yaml``, or
``configs/prune/quickstart_slim.yaml`` when it says ``--prune.method slim``. The run directory is
``--trainer.default_root_dir``, else ``prune-<method>`` next to a searched student's
``best_arch.json``, else ``runs/prune-<method>``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from das.cli import INTERRUPTED, with_quickstart
from das.data import DasDataModule
from das.distill.command import DasCLI
from das.distill.fit import run_root
from das.distill.module import DistillModule
from das.errors import DasError
from das.models import leaderboard_row, pareto_entry
from das.paths import REPO_ROOT
from das.prune.config import PruneConfig
from das.prune.runfiles import RunFiles

QUICKSTART_PX = REPO_ROOT / "configs" / "prune" / "quickstart_px.yaml"
QUICKSTART_SLIM = REPO_ROOT / "configs" / "prune" / "quickstart_slim.yaml"
#: A command with any of these says what it trains on, so the quickstart does not apply (as train.py).
OWN_RUN_FLAGS = ("--data", "--data.dataset", "--model.teacher", "--model.teacher_checkpoint")
#: What the search's quickstart writes: the teacher both prune quickstarts start from.
QUICKSTART_TEACHER = "runs/quickstart/teacher/teacher.pt"


def quickstart_for(argv: list[str]) -> Path:
    """The slim quickstart for a command that asks for ``--prune.method slim``, else the at-init one."""
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key == "--prune.method" and (value if eq else (argv[i + 1] if i + 1 < len(argv) else "")) == "slim":
            return QUICKSTART_SLIM
    return QUICKSTART_PX


def prune_root(default_root_dir: str | None, student: str, method: str) -> Path:
    """``default_root_dir`` when given; else ``prune-<method>`` beside a searched student (as train.py's ``distill``); else ``runs/prune-<method>``."""
    if default_root_dir is not None:
        return Path(default_root_dir)
    searched = student.strip().endswith(".json") or leaderboard_row(student) or pareto_entry(student)
    if not searched:
        return Path("runs") / f"prune-{method}"
    distill = run_root(None, student)  # checks the file exists; distill, distill-rankN or distill-paretoN
    return distill.with_name(distill.name.replace("distill", f"prune-{method}", 1))


class PruneCLI(DasCLI):
    """prune.py's LightningCLI: train.py's, with the ``prune`` section, stage-wise resume and no baseline."""

    prog = "prune.py"
    prune: PruneConfig
    files: RunFiles
    resuming: bool = False

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="'last': resume this run where it stopped (pruning, sparse training, slimming or training)")
        parser.add_class_arguments(PruneConfig, "prune", instantiate=False)

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        self.prune = settings = PruneConfig(**cfg.prune.as_dict())
        check_model_settings(settings, cfg.model)
        cfg.trainer.default_root_dir = str(prune_root(cfg.trainer.default_root_dir, cfg.model.student, settings.method))
        ckpt_path, cfg.ckpt_path = cfg.ckpt_path, None
        super().before_instantiate_classes()  # epochs, loggers, a writable run dir; resume settled below
        cfg.ckpt_path = ckpt_path
        self.files = RunFiles(Path(cfg.trainer.default_root_dir))
        if ckpt_path not in (None, "last"):
            raise DasError(f"ckpt_path={ckpt_path!r}: prune.py resumes its own run only, with --ckpt_path last")
        self.resuming = ckpt_path == "last"
        if self.resuming and not self.files.has_stages():
            raise DasError(f"ckpt_path=last: nothing to resume in {self.files.root} (no stage had finished); run without --ckpt_path to start")
        # The final training's checkpoint; an earlier stage's is found by its own stage.
        self.resume = self.files.last() if self.resuming and self._final_stage_reached() else None

    def _final_stage_reached(self) -> bool:
        needed = self.files.masks if self.prune.at_init else self.files.pruned
        return needed.is_file() and self.files.results.is_file()


class _ParseOnlyCLI(PruneCLI):
    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def check_model_settings(settings: PruneConfig, model: Any) -> None:
    """Refuse ``model`` settings the pruning mode cannot honour, before any data is read."""
    if not settings.at_init and (model.teacher is not None or model.teacher_checkpoint is not None):
        raise DasError(
            f"model.teacher={model.teacher!r}: in slim mode the teacher is the unpruned network (prune.distill) "
            "or none (prune.distill false); set model.teacher and model.teacher_checkpoint to null"
        )
    ckpt = model.teacher_checkpoint
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        hint = "run python search.py first (it trains the quickstart teacher), or " if ckpt == QUICKSTART_TEACHER else ""
        raise DasError(f"model.teacher_checkpoint={ckpt!r} does not exist; {hint}give the teacher's weights, or --model.teacher null to train alone")


def make_cli(argv: list[str], instantiate: bool = True) -> PruneCLI:
    """Parse ``argv`` (a quickstart when it names no config, data or teacher); ``instantiate=False`` only parses."""
    cls = PruneCLI if instantiate else _ParseOnlyCLI
    return cls(
        DistillModule, DasDataModule, run=False, seed_everything_default=0,
        args=with_quickstart(argv, quickstart_for(argv), OWN_RUN_FLAGS),
        parser_kwargs={"exit_on_error": False}, save_config_kwargs={"overwrite": True},
    )


def run_settings(cli: PruneCLI) -> dict[str, Any]:
    """What a resumed run must share with the run it resumes: the pruning, the networks and the data."""
    model = cli.config.model
    return {"prune": cli.prune.to_dict(), "student": model.student, "teacher": model.teacher,
            "teacher_checkpoint": model.teacher_checkpoint, "data": cli.config.data.as_dict(), "seed": cli.config.seed_everything}


def main(argv: list[str]) -> int:
    cli = make_cli(argv)
    cfg, files = cli.prune, cli.files
    if not cli.resuming and files.clear():
        print(f"starting afresh in {files.root}: an earlier run's stages there were removed (add --ckpt_path last to resume instead)")
    files.root.mkdir(parents=True, exist_ok=True)
    settings = run_settings(cli)
    try:
        if cfg.at_init:
            from das.prune.masked_run import run_at_init

            results = run_at_init(cli, cfg, files, settings, cli.resuming)
        else:
            from das.prune.slim_run import run_slim

            results = run_slim(cli, cfg, files, settings, cli.resuming)
    except KeyboardInterrupt:
        print(f"interrupted: the stages finished so far are kept in {files.root}; rerun the same command with --ckpt_path last to resume",
              file=sys.stderr)
        return INTERRUPTED
    print_summary(results, cli)
    return 0


def print_summary(results: dict[str, Any], cli: PruneCLI) -> None:
    """The few lines a user reads at the end of a run."""
    acc, params, flops = results["test_acc"], results["params"], results["flops"]
    student = cli.config.model.student
    if results["mode"] == "at_init":
        d = results["density"]
        alive = "every layer alive" if d["empty_layers"] == 0 else f"{d['empty_layers']} layers left empty"
        print(f"\n{results['method']}: kept {d['overall']['kept']:,} of {d['overall']['total']:,} weights of {student} "
              f"(density {d['overall']['density']:.4f}; {alive}, the sparsest at {d['min_layer_density']:.4f})")
    else:
        ch = results["slim"]["bn_channels"]
        print(f"\nslim: kept {ch['after']:,} of {ch['before']:,} BatchNorm channels of {student} ({ch['removed_fraction']:.1%} removed)")
        print(f"  unpruned network: test accuracy {acc['unpruned']:.2f}%")
    print(f"  params {params['before']:,} -> {params['after']:,} ({params['ratio']:.3f}x), FLOPs {flops['before']:,} -> {flops['after']:,} ({flops['ratio']:.3f}x)")
    print(f"  test accuracy before training {acc['before_training']:.2f}%, after {results['epochs']} epochs {acc['after_training']:.2f}% "
          f"({results['test_images']} test images)" + (f"; teacher {acc['teacher']:.2f}%" if "teacher" in acc else ""))
    paths = results["paths"]
    written = [paths["student"], paths.get("onnx"), paths.get("masks") or paths.get("pruned"), paths["results"]]
    print(f"wrote {', '.join(p for p in written if p)}, checkpoints under {paths['checkpoints']}")
