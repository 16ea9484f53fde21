"""Distil the searched student from the teacher, and compare it with the student trained alone.

    python train.py                                   # quickstart: the last search's best student
    python train.py --config configs/distill/cifar10_resnet56.yaml
    python train.py --ckpt_path last                  # resume an interrupted run
    python train.py --print_config                    # every option (LightningCLI)
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from das.cli import guarded
from das.data import DasDataModule
from das.distill import DistillModule
from das.distill.fit import export_student, fit_and_test, last_checkpoint, make_trainer

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "distill" / "quickstart.yaml"


class DasCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="resume from this checkpoint, or 'last'")
        parser.add_argument("--baseline", type=bool, default=True, help="also train the student without the teacher, same budget")


def main(argv: list[str]) -> int:
    cli = DasCLI(
        DistillModule, DasDataModule, run=False, seed_everything_default=0,
        args=None if argv == sys.argv[1:] else argv,  # LightningCLI warns when given both
        parser_kwargs={"default_config_files": [str(DEFAULT_CONFIG)]},
        save_config_kwargs={"overwrite": True},
    )
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    out = Path(trainer.default_root_dir)
    distilled = fit_and_test(model, data, trainer, ckpt_path=cli.config.ckpt_path)
    student_file = export_student(model, out / "student.pt", test_acc=distilled)
    results = {"student": model.hparams.student, "teacher": model.hparams.teacher, "distilled_test_acc": distilled}

    if cli.config.baseline and model.teacher is not None:
        L.seed_everything(cli.config.seed_everything)
        accepted = inspect.signature(DistillModule.__init__).parameters  # LightningCLI adds private keys
        args = {k: v for k, v in model.hparams.items() if k in accepted}
        alone = DistillModule(**{**args, "teacher": None, "teacher_checkpoint": None})
        root = out.parent / f"{out.name}_baseline"
        resume = last_checkpoint(root) if cli.config.ckpt_path else None
        results["baseline_test_acc"] = fit_and_test(alone, data, make_trainer(root, trainer.max_epochs, accelerator=cli.config.trainer.accelerator), resume)
        export_student(alone, root / "student.pt", test_acc=results["baseline_test_acc"])

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nstudent {model.hparams.student} after {trainer.current_epoch} epochs:")
    print(f"  distilled from {model.hparams.teacher}: test accuracy {distilled:.2f}%")
    if "baseline_test_acc" in results:
        gain = distilled - results["baseline_test_acc"]
        print(f"  trained alone (same budget):  test accuracy {results['baseline_test_acc']:.2f}%  (distillation: {gain:+.2f} points)")
    ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None) or out
    print(f"wrote {student_file}, {out / 'results.json'}, checkpoints under {ckpt_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
