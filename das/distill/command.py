"""train.py's command: distil a student from a teacher, train it alone too, and compare.

The LightningCLI (:class:`DasCLI`) settles the run directory and refuses bad settings before
any data is read; :func:`main` fits, tests, exports and reports. Settings come from the code's
signatures, then one config file, then flags: ``configs/distill/quickstart.yaml`` only for a
command that names no ``--config``, no dataset and no teacher (as search.py); a ``--config``
replaces it (nothing is layered). A run writes everything under one directory (see
das.distill.fit): ``--trainer.default_root_dir`` when given, else ``distill/`` next to the
student's ``best_arch.json``; the baseline under its ``baseline/`` subfolder.
"""


from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import time
from argparse import ArgumentError
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from das.cli import INTERRUPTED, with_quickstart
from das.data import DasDataModule
from das.distill.checks import check_models_run, check_search_shape, warn_unscored_row
from das.distill.compare import compare, verdict
from das.distill.export import export_onnx
from das.distill.losses import LOSSES, LossSpec
from das.distill.module import DistillModule, alone_terms
from das.distill.fit import (
    LOG_DIR, check_writable, checkpoint_callbacks, export_student, fit_and_test, last_checkpoint, resolve_resume, run_root,
    tested_batches,
)
from das.errors import DasError
from das.evaluate import near_chance, top1_accuracy

#: The quickstart distillation config (the repository's configs/, beside das/).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "distill" / "quickstart.yaml"
BASELINE_DIR = "baseline"


#: A command with any of these says what it trains on, so the quickstart does not apply.
OWN_RUN_FLAGS = ("--data", "--data.dataset", "--model.teacher", "--model.teacher_checkpoint")


def argument_error(err: ArgumentError, parser: Any, prog: str = "train.py") -> DasError:
    """jsonargparse's usage error as one line, with the close option names for an unknown flag."""
    message = " ".join(str(err).split())
    # A class that fails to validate comes as every Union alternative's complaint: keep the class's own.
    problem = re.search(r"^(Parser key \"[^\"]+\"):.*?Problem with given class_path '([^']+)': (.*?)(?: - Expected|$)", message)
    if problem:
        message = f"{problem.group(1)}: {problem.group(2)}: {problem.group(3)}"
    unknown = re.search(r"unrecognized arguments: (--[^\s=]+)", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), list(parser._option_string_actions), n=3, cutoff=0.6)
        if close:
            message += "; did you mean " + " or ".join(close) + "?"
    return DasError(f"{message} (python {prog} --help lists every option)")


def _loggers(spec: Any) -> list[Namespace]:
    specs = spec if isinstance(spec, list) else [spec]
    return [s for s in specs if isinstance(s, Namespace) and s.get("class_path")]


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class DasCLI(LightningCLI):
    """train.py's LightningCLI: settles the run directory and refuses bad settings before any data is read."""

    resume: str | None = None
    #: The command's file name, for the hint in a parse error.
    prog: str = "train.py"

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="resume from this checkpoint, or 'last' (this run's last.ckpt)")
        parser.add_argument("--baseline", type=bool, default=True, help="also train the student without the teacher, same budget")

    def parse_arguments(self, parser, args) -> None:
        # Parse errors become one line and exit 1 (jsonargparse would print usage and exit 2).
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as err:
            if "required: save_dir" not in str(err):
                raise argument_error(err, parser, self.prog) from None
            # A logger named without its save_dir: before_instantiate_classes sets it to the run root.
            try:
                self.config = parser.parse_args([*args, "--trainer.logger.init_args.save_dir", "."])
            except ArgumentError:
                raise argument_error(err, parser, self.prog) from None

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        epochs = cfg.trainer.max_epochs
        if epochs is None:
            raise DasError("trainer.max_epochs is not set: give --trainer.max_epochs N, the epochs each student trains (the quickstart uses 15)")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise DasError(f"trainer.max_epochs={epochs!r} must be an integer >= 1: the epochs each student trains")
        fit_warmup(cfg)
        check_devices(cfg.trainer.accelerator, cfg.trainer.devices)
        check_precision(cfg.trainer.precision)
        check_strategy(cfg.trainer.strategy)
        root = run_root(cfg.trainer.default_root_dir, cfg.model.student)
        cfg.trainer.default_root_dir = str(root)
        for logger in _loggers(cfg.trainer.logger):
            if logger.class_path.endswith("TensorBoardLogger") and not _tensorboard_available():
                raise DasError(
                    f"trainer.logger={logger.class_path} needs TensorBoard, which is not installed: "
                    "pip install -e '.[tensorboard]', or drop --trainer.logger for the default CSV logs"
                )
            logger.init_args.save_dir = str(root)  # every run logs under its own root
        check_writable(root)
        self.resume = resolve_resume(cfg.ckpt_path, root)

    def recipe_model(self, model: DistillModule, data: DasDataModule, trainer: L.Trainer) -> DistillModule | None:
        """The module the run fits: ``model`` as configured. A subclass may rebuild it with another
        recipe (train.py's recipe study, das.tune.command), or return None when nothing more is to run."""
        return model

    def report(self, results: dict[str, Any], seconds: dict[str, float]) -> list[str]:
        """Add a subclass's entries to ``results`` (results.json) and return the lines to print; ``seconds``: each run's fit and test."""
        return []

    def instantiate_trainer(self, root: str | Path | None = None, resuming: bool | None = None, **kwargs: Any) -> L.Trainer:
        """The configured Trainer, writing its checkpoints and logs under ``root`` (default: the run's root).

        A resuming Trainer skips the sanity check: the checkpoint's epoch was validated already,
        and skipping it keeps the resumed run's random draws those of the uninterrupted run.
        """
        cfg = self.config.trainer
        root = Path(root or cfg.default_root_dir)
        configured = self.config_init.trainer.get("callbacks") or []
        callbacks = list(configured) if isinstance(configured, list) else [configured]
        if cfg.enable_checkpointing is not False:
            callbacks += checkpoint_callbacks(root, monitor="val/acc" if self.config.data.val_fraction > 0 else None)
        if root == Path(cfg.default_root_dir):
            logger = self.config_init.trainer.logger
        else:  # the baseline: fresh loggers of the configured kinds, under its own folder
            logger = [_instantiate(s, save_dir=str(root)) for s in _loggers(cfg.logger)] or cfg.logger
        if logger is None or logger is True:
            logger = CSVLogger(root, name=LOG_DIR)
        if resuming is None:
            resuming = self.resume is not None
        if resuming:
            kwargs["num_sanity_val_steps"] = 0
        return super().instantiate_trainer(default_root_dir=str(root), callbacks=callbacks, logger=logger, **kwargs)


def fit_warmup(cfg: Namespace) -> None:
    """Shorten a warmup as long as the run to half the run, with a note (the quickstart warms up for one epoch).

    ``--trainer.max_epochs 1`` on the quickstart would otherwise be refused for its one-epoch
    warmup, a setting the user never typed. A run bounded by ``max_steps`` is left to the
    scheduler's own check, since its epochs are not known here.
    """
    warmup, epochs = cfg.model.warmup_epochs, cfg.trainer.max_epochs
    if cfg.trainer.get("max_steps") not in (None, -1) or not warmup or warmup < epochs:
        return
    cfg.model.warmup_epochs = epochs / 2
    print(f"note: model.warmup_epochs={warmup} is not shorter than trainer.max_epochs={epochs}; warming up for "
          f"{epochs / 2:g} epochs (half the run) instead", file=sys.stderr)


def _instantiate(spec: Namespace, **overrides: Any) -> Any:
    module, _, name = spec.class_path.rpartition(".")
    args = spec.init_args.as_dict() if spec.get("init_args") else {}
    return getattr(importlib.import_module(module), name)(**{**args, **overrides})


def make_cli(argv: list[str], instantiate: bool = True, cli: type[DasCLI] = DasCLI) -> DasCLI:
    """Parse ``argv`` (the quickstart config when it names none) with ``cli``; ``instantiate=False`` only parses."""
    cls = cli if instantiate else type(f"ParseOnly{cli.__name__}", (_ParseOnly, cli), {})
    return cls(
        DistillModule, DasDataModule, run=False, seed_everything_default=0, args=with_quickstart(argv, DEFAULT_CONFIG, OWN_RUN_FLAGS),
        parser_kwargs={"exit_on_error": False}, save_config_kwargs={"overwrite": True},
    )


class _ParseOnly:
    """Mixed into a CLI class that only parses: nothing is checked beyond the parser's own, nothing built."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def check_devices(accelerator: Any, devices: Any, gpus: int | None = None) -> None:
    """Refuse GPUs that are not there in one line (Lightning says only "No supported gpu backend found!")."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if str(accelerator) not in ("gpu", "cuda"):
        return
    if gpus == 0:
        raise DasError(f"trainer.accelerator={accelerator} but no CUDA device is present; give --trainer.accelerator cpu (or auto)")
    wanted = devices if isinstance(devices, int) and not isinstance(devices, bool) else (len(devices) if isinstance(devices, list) else None)
    if wanted is not None and wanted > gpus:
        raise DasError(f"trainer.devices={devices} but {gpus} CUDA device(s) are present; give --trainer.devices {gpus} or fewer")


#: Lightning precisions das runs: its batches, teacher checks and exports are float32, and "-true"
#: precisions would cast the networks but not what das feeds them outside the Trainer.
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed",
              "16": "16-mixed", "16-mixed": "16-mixed"}


def check_precision(precision: Any) -> None:
    """Refuse a precision das does not run (64-true, bf16-true, 16-true, transformer-engine) in one line."""
    if precision is None or str(precision) in PRECISIONS:
        return
    raise DasError(f"trainer.precision={precision} is not supported: das feeds and exports float32 networks; "
                   "accepted: 32-true (default), bf16-mixed (CPU or GPU autocast), 16-mixed (GPU autocast with a gradient scaler)")


def check_strategy(strategy: Any, interactive: bool | None = None) -> None:
    """Refuse a multi-process strategy that must re-launch the script from an interactive session (a notebook)."""
    name = strategy if isinstance(strategy, str) else ""
    if interactive is None:
        interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules
    if interactive and name.startswith("ddp") and name not in ("ddp_notebook", "ddp_fork"):
        raise DasError(f"trainer.strategy={name} starts new processes by re-running the script, which an interactive session "
                       "(a notebook) cannot do; run train.py from a terminal, or give --trainer.strategy ddp_notebook")


def teacher_accuracy(model: DistillModule, data: DasDataModule, trainer: L.Trainer) -> float:
    """The teacher's top-1 on the test batches the students were just tested on."""
    assert model.teacher is not None
    device = trainer.strategy.root_device
    teacher = model.teacher.to(device)
    try:
        return top1_accuracy(teacher, islice(data.test_dataloader(), tested_batches(trainer, data)), device)
    finally:
        teacher.cpu()



def save_student(module: DistillModule, path: Path, example: torch.Tensor, **info: Any) -> list[Path]:
    """``student.pt`` and ``student.json``, and ``student.onnx`` beside them (checked against the eager student).

    A network the ONNX exporter cannot handle costs its ``student.onnx`` only: one warning line,
    and the trained run's ``student.pt`` and results are kept.
    """
    onnx_path = path.with_suffix(".onnx")
    try:
        check = export_onnx(module.student, example, onnx_path)
    except Exception as err:  # an exotic student the exporter cannot handle must not lose the run it ended
        reason = (str(err).strip().splitlines() or [""])[0][:300] or type(err).__name__
        print(f"warning: {onnx_path} not written ({reason}); {path.name} and results.json are kept", file=sys.stderr)
        return [export_student(module, path, onnx_max_abs_diff=None, onnx_error=reason, **info)]
    return [export_student(module, path, onnx_max_abs_diff=check.max_abs_diff, **info), onnx_path]


def loss_settings(spec: LossSpec) -> dict[str, float]:
    """The KD weight and temperature and the cosine loss's effective scale (weight × scale; 0 when absent) that the verdict names."""
    kd, cosine = spec.term("kd"), spec.term("cosine")
    return {"kd_weight": kd.weight if kd else 0.0, "kd_temperature": kd.option("temperature") if kd else LOSSES.get("kd").defaults["temperature"],
            "feature_scale": cosine.weight * cosine.option("scale") if cosine else 0.0}


def main(argv: list[str], cli_class: type[DasCLI] = DasCLI) -> int:
    cli = make_cli(argv, cli=cli_class)
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    if cli.config.baseline and model.teacher is not None:
        alone_terms(model.loss_spec)  # refuse now, not after the distilled run, a config the baseline cannot train on
    student = str(model.hparams.student)
    warn_unscored_row(student)
    check_search_shape(student, model.hparams.teacher_checkpoint, data.input_shape, data.hparams.image_size)
    check_models_run(model.student, student, model.teacher, model.hparams.teacher, data.input_shape)
    model = cli.recipe_model(model, data, trainer)
    if model is None:
        return 0
    out = Path(trainer.default_root_dir)
    seconds: dict[str, float] = {}
    if cli.resume is None and last_checkpoint(out):
        print(f"starting afresh in {out}: its checkpoints will be overwritten (add --ckpt_path last to resume instead)")
    try:
        started = time.perf_counter()
        distilled = fit_and_test(model, data, trainer, ckpt_path=cli.resume)
        seconds["distilled"] = time.perf_counter() - started
        rank0 = trainer.is_global_zero  # under DDP every rank trains and tests; rank 0 alone writes and reports
        test_images = min(data.split_size("test"), tested_batches(trainer, data) * data.hparams.batch_size)
        # The ONNX export's input: values don't shape the graph, but the check wants realistic ones.
        example = torch.randn(2, *data.input_shape, generator=torch.Generator().manual_seed(0))
        student_files = save_student(model, out / "student.pt", example, test_acc=distilled) if rank0 else []
        results: dict[str, Any] = {
            "student": model.hparams.student, "teacher": model.hparams.teacher, "epochs": trainer.max_epochs,
            "distilled_test_acc": distilled, "test_images": test_images,
        }
        if model.teacher is not None:
            results["teacher_test_acc"] = teacher_accuracy(model, data, trainer)

        if cli.config.baseline and model.teacher is not None:
            L.seed_everything(cli.config.seed_everything)
            accepted = inspect.signature(DistillModule.__init__).parameters  # LightningCLI adds private keys
            args = {k: v for k, v in model.hparams.items() if k in accepted}
            alone = DistillModule(**{**args, "teacher": None, "teacher_checkpoint": None})
            root = out / BASELINE_DIR
            resume = last_checkpoint(root) if cli.resume else None
            started = time.perf_counter()
            results["baseline_test_acc"] = fit_and_test(alone, data, cli.instantiate_trainer(root=root, resuming=resume is not None), resume)
            seconds["baseline"] = time.perf_counter() - started
            if rank0:
                save_student(alone, root / "student.pt", example, test_acc=results["baseline_test_acc"])
    except KeyboardInterrupt:
        kept = last_checkpoint(out / BASELINE_DIR) or last_checkpoint(out)
        where = f"the last finished epoch is kept in {kept}" if kept else "no epoch had finished, nothing to resume"
        print(f"interrupted: {where}; rerun the same command with --ckpt_path last to resume", file=sys.stderr)
        return INTERRUPTED

    if not rank0:
        return 0
    hp = model.hparams
    summary = None
    if "baseline_test_acc" in results:
        comparison = compare(results["teacher_test_acc"], distilled, results["baseline_test_acc"], test_images)
        results.update(comparison.to_dict())
        summary = verdict(comparison, **loss_settings(model.loss_spec), epochs=trainer.max_epochs)
    extra = cli.report(results, seconds)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"\nstudent {hp.student} after {trainer.current_epoch} epochs, tested on {test_images} held-out images:")
    if "teacher_test_acc" in results:
        print(f"  teacher {hp.teacher}:  test accuracy {results['teacher_test_acc']:.2f}%")
        weak = near_chance(results["teacher_test_acc"], data.num_classes)
        if weak:
            print(f"warning: teacher {hp.teacher} is {weak}, so the distilled student learnt from noise; give its trained "
                  "weights with --model.teacher_checkpoint", file=sys.stderr)
        print(f"  distilled from it:     test accuracy {distilled:.2f}%")
    else:
        print(f"  trained alone:         test accuracy {distilled:.2f}%")
    if "baseline_test_acc" in results:
        print(f"  trained alone (same budget): test accuracy {results['baseline_test_acc']:.2f}%  "
              f"(distillation: {results['distillation_gain']:+.2f} points)")
        print(summary)
    for line in extra:
        print(line)
    print(f"wrote {', '.join(map(str, student_files))}, {out / 'results.json'}, checkpoints under {out / 'checkpoints'}")
    return 0

