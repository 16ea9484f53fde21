"""train.py's command with a ``tune:`` section: a study of the distillation recipe before the final run.

It is :mod:`das.distill.command`'s LightningCLI and ``main`` (the same ``model``, ``data`` and
``trainer`` options, the same final run, baseline and results) with one step added between
building the run and fitting it (:meth:`TuneCLI.recipe_model`): with ``tune.trials`` N > 0, an
Optuna study of N short distillations judged on the validation split (:mod:`das.tune.study`)
chooses ``model.losses``, ``model.feature_pairs`` and ``model.lr``, and the final run trains the
student with that recipe (the no-teacher baseline too, so the reported gain is the teacher's
terms', with the same tuned learning rate on both sides). With ``tune.trials`` 0 (the default)
the command is train.py as it was.

The study lives in ``RUN/tune/`` (journal, trials.csv, plots, best.json), the chosen recipe in
``RUN/tuned.yaml`` (:mod:`das.tune.outputs`), and results.json gains a ``tune`` entry: the recipe,
its validation accuracy, and the seconds of the tuning and of the final run.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import lightning as L

from das.calibrate.trainer import weights_digest
from das.data import DasDataModule
from das.distill import command as distill_command
from das.distill.command import DasCLI
from das.distill.losses import LossSpec
from das.distill.module import DistillModule
from das.errors import DasError
from das.models import arch_spec
from das.tune.config import TuneConfig
from das.tune.outputs import BEST_JSON, PLOTS_DIR, TRIALS_CSV, TUNED_YAML, write_best, write_plots, write_trials_csv, write_tuned_yaml
from das.tune.space import RecipeSpace, describe
from das.tune.study import TUNE_DIR, RecipeStudy, TuneResult
from das.tune.trials import ShortRuns, reads_features

#: The ``model`` settings a recipe is made of.
RECIPE_KEYS = ("losses", "feature_pairs", "lr")
#: The ``model`` settings besides the recipe that shape a trial (its optimiser and schedule).
TRAINING_KEYS = ("optimizer", "momentum", "nesterov", "weight_decay", "betas", "schedule", "warmup_epochs", "milestones", "gamma",
                 "decay_norm_and_bias")
#: The ``data`` settings that decide which images a trial sees and how.
DATA_KEYS = ("dataset", "root", "train_file", "test_file", "image_size", "mean", "std", "augment", "transform", "batch_size",
             "val_fraction", "seed")


def tuned_for(student: str, teacher: str | None) -> dict[str, Any]:
    """How tuned.yaml records what its recipe was tuned for: the student as given, its architecture, the teacher.

    The architecture (a search space's ArchSpec as JSON) is what identifies a searched student: a
    ``best_arch.json`` rewritten by a later search is another student under the same path.
    """
    arch = arch_spec(student)
    return {"student": student, "arch": arch.to_json() if arch is not None else None, "teacher": teacher}


def check_tuned_for(recorded: dict[str, Any], student: str, teacher: str | None) -> None:
    """Refuse a tuned recipe for another student or teacher, in one line."""
    now = tuned_for(student, teacher)
    same = recorded.get("arch") == now["arch"] if (recorded.get("arch") or now["arch"]) else recorded.get("student") == now["student"]
    if not same:
        what = f"model.student={student!r}" + (f" ({now['arch']})" if now["arch"] else "")
        was = recorded.get("arch") or recorded.get("student")
        raise DasError(f"tune.tuned_for: this recipe was tuned for student {was}, not {what}; tune it for this student "
                       "(--tune.trials N) or drop tune.tuned_for (--tune.tuned_for null) to train it with this recipe anyway")
    if recorded.get("teacher") != teacher:
        raise DasError(f"tune.tuned_for: this recipe was tuned with teacher {recorded.get('teacher')!r}, not model.teacher={teacher!r}; "
                       "tune it for this teacher (--tune.trials N) or drop tune.tuned_for (--tune.tuned_for null)")


class TuneCLI(DasCLI):
    """train.py's LightningCLI: :class:`~das.distill.command.DasCLI` with the ``tune`` section."""

    tune: TuneConfig
    tuned: TuneResult | None = None

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(TuneConfig, "tune", instantiate=False)

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        self.tune = TuneConfig(**cfg.tune.as_dict())
        super().before_instantiate_classes()
        if not self.tune.on:
            if self.tune.tuned_for is not None:
                check_tuned_for(self.tune.tuned_for, cfg.model.student, cfg.model.teacher)
            return
        if cfg.model.teacher is None:
            raise DasError(f"tune.trials={self.tune.trials} tunes the distillation recipe, but model.teacher is null; "
                           "give a teacher, or set tune.trials 0 to train the student alone")
        if not cfg.data.val_fraction:
            raise DasError("the recipe study judges its trials on the validation split (the test split never chooses anything), "
                           "but data.val_fraction=0; set data.val_fraction (0.1 is typical) or tune.trials 0")

    def recipe_model(self, model: DistillModule, data: DasDataModule, trainer: L.Trainer) -> DistillModule | None:
        """With ``tune.trials`` > 0: run (or read back) the study, write its outputs, and rebuild ``model`` with the chosen recipe."""
        cfg = self.tune
        if not cfg.on:
            return model
        held_out = data.split_size("val")
        if held_out == 0:
            raise DasError(f"data.val_fraction={data.hparams.val_fraction} holds out 0 of the {data.split_size('train')} training images "
                           "(it rounds to none in every class), and the recipe study judges its trials on them; raise data.val_fraction")
        if cfg.views > 1 and not data.augment:
            raise DasError(f"tune.views={cfg.views} caches augmented views, but data.augment is empty; set data.augment or tune.views 1")
        assert model.teacher is not None
        hp = model.hparams
        root = Path(trainer.default_root_dir)
        directory = root / TUNE_DIR
        space = RecipeSpace(cfg, dict(hp.losses), hp.feature_pairs, float(hp.lr))
        configured = {"losses": LossSpec.from_config(hp.losses).to_config(), "feature_pairs": hp.feature_pairs, "lr": float(hp.lr)}
        settings = {
            "tune": cfg.study_settings(), "student": tuned_for(hp.student, hp.teacher), "teacher_checkpoint": hp.teacher_checkpoint,
            "teacher_weights": weights_digest(model.teacher), "model": {k: hp[k] for k in (*RECIPE_KEYS, *TRAINING_KEYS)},
            "data": {k: data.hparams.get(k) for k in DATA_KEYS}, "max_epochs": trainer.max_epochs, "seed": self.config.seed_everything,
        }
        study = RecipeStudy(directory, cfg, settings)
        uses_features = cfg.cosine_scale is not None or reads_features(hp.losses)
        runs = ShortRuns(model.student, model.teacher, data, cfg, model.optim, trainer.max_epochs, hp.feature_pairs, uses_features,
                         trainer.strategy.root_device, directory)
        print(f"tune: {cfg.trials} trials of {cfg.epochs} epoch(s) each, judged on {held_out} validation images; study in {directory}")
        study.run(space, runs, after_trial=lambda: write_trials_csv(study.study, directory / TRIALS_CSV))
        model.teacher.cpu()
        result = self.tuned = study.result(configured, held_out)
        write_trials_csv(study.study, directory / TRIALS_CSV)
        _, notes = write_plots(study.study, directory / PLOTS_DIR)
        for note in notes:
            print(f"tune: {note}")
        write_best(result, directory / BEST_JSON)
        if result.fallback is not None:
            print(f"tune: {result.fallback}, so the configured recipe is kept ({describe(configured)}) and {TUNED_YAML} is not written; "
                  "narrow the ranges (a lower tune.lr_factor first)")
        else:
            write_tuned_yaml(self.parser, self.config, result, tuned_for(hp.student, hp.teacher), root / TUNED_YAML)
            if result.kept is not None:
                print(f"tune: {result.kept}, so the configured recipe is kept")
            print(f"tune: trial {result.trial} is {'kept' if result.kept else 'best'}, {result.val_acc:.2f}% validation accuracy after {cfg.epochs} epoch(s): "
                  f"{describe(result.recipe)}; wrote {root / TUNED_YAML}")
        if cfg.only:
            print(f"tune.only: the study's outputs are in {directory}; no final run")
            return None
        if result.fallback is not None:
            return model
        for key, value in result.recipe.items():
            self.config.model[key] = value  # the run's saved config.yaml says which recipe it trained
        L.seed_everything(self.config.seed_everything, verbose=False)  # the student starts as tuned.yaml's run would
        accepted = inspect.signature(DistillModule.__init__).parameters
        args = {k: v for k, v in hp.items() if k in accepted}
        return DistillModule(**{**args, **result.recipe})

    def report(self, results: dict[str, Any], seconds: dict[str, float]) -> list[str]:
        """results.json's ``tune`` entry: the recipe, its validation accuracy, and the seconds of the tuning and the final run."""
        if self.tuned is None:
            return []
        entry = self.tuned.to_dict()
        final = seconds.get("distilled")
        entry.update(final_run_seconds=round(final, 3) if final is not None else None,
                     baseline_seconds=round(seconds["baseline"], 3) if "baseline" in seconds else None,
                     cost_in_final_runs=round(self.tuned.seconds / final, 3) if final else None)
        results["tune"] = entry
        if self.tuned.fallback is not None:
            return [f"  recipe: the configured one ({self.tuned.fallback})"]
        cost = f", {entry['cost_in_final_runs']:.2f}× the final run's {final:.1f} s" if final else ""
        how = "the configured one, kept by tune.switch_z" if self.tuned.kept else "tuned by"
        return [f"  recipe: {how} trial {self.tuned.trial} ({self.tuned.val_acc:.2f}% on validation); the tuning took {self.tuned.seconds:.1f} s{cost}"]


def make_cli(argv: list[str], instantiate: bool = True) -> TuneCLI:
    """Parse ``argv`` as train.py does (the quickstart config when it names none); ``instantiate=False`` only parses."""
    return distill_command.make_cli(argv, instantiate, cli=TuneCLI)  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    return distill_command.main(argv, cli_class=TuneCLI)
