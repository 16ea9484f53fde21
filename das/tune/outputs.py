"""What a recipe study leaves in the run directory: the trials as CSV, Optuna's plots, the chosen recipe.

- ``tune/trials.csv``: one row per trial: its number, outcome (complete, pruned, diverged; lost:
  its process died or was interrupted, and another trial took its place; running), validation
  accuracy (the last epoch it reached), epochs, seconds, whether it is the configured recipe, its
  anchor or refinement scale, and the recipe's params;
- ``tune/plots/history.png`` and ``tune/plots/importance.png``: Optuna's optimisation history and
  parameter importances (fANOVA), drawn with its matplotlib backend; the importances need two
  completed trials, and are skipped with a note before that;
- ``tune/best.json``: what the study chose (:class:`~das.tune.study.TuneResult`);
- ``tuned.yaml`` (in the run directory itself): the whole run's config with the chosen recipe in
  ``model`` and ``tune.trials: 0``: ``python train.py --config RUN/tuned.yaml`` trains that recipe
  again without a study. It records the student and teacher it was tuned for in
  ``tune.tuned_for``, and train.py refuses it for another student or teacher.

Every file is written to a temporary name and renamed into place, so a kill leaves the old file
or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from das.tune.study import ANCHOR, CONFIGURED, OUTCOME, RECIPE, REFINE, SECONDS, TuneResult, counted

TRIALS_CSV = "trials.csv"
BEST_JSON = "best.json"
PLOTS_DIR = "plots"
TUNED_YAML = "tuned.yaml"
#: The params a trial may draw, in the CSV's column order.
PARAMS = ("logit_loss", "logit_weight", "temperature", "cosine", "cosine_scale", "feature_pairs", "lr_factor")


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def outcome_of(trial: optuna.trial.FrozenTrial) -> str:
    if counted(trial):
        return trial.user_attrs[OUTCOME]
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "waiting"
    return "lost"


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        recipe = t.user_attrs.get(RECIPE, {})
        rows.append({"trial": t.number, "outcome": outcome_of(t), "val_acc": t.value if t.value is not None else last,
                     "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)), "seconds": t.user_attrs.get(SECONDS),
                     "configured": bool(t.user_attrs.get(CONFIGURED, False)), "anchor": t.user_attrs.get(ANCHOR),
                     "refine": t.user_attrs.get(REFINE),
                     **{p: t.params.get(p) for p in PARAMS},
                     "lr": recipe.get("lr"), "losses": json.dumps(recipe.get("losses")) if recipe else None,
                     "worker": t.user_attrs.get("worker")})
    return rows


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    rows = trial_rows(study)
    out = io.StringIO()
    fields = ["trial", "outcome", "val_acc", "epochs", "seconds", "configured", "anchor", "refine", *PARAMS, "lr", "losses", "worker"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, out.getvalue())


def write_plots(study: optuna.Study, directory: Path) -> tuple[list[Path], list[str]]:
    """Optuna's history and parameter-importance plots (matplotlib, Agg); returns the files and a note per plot skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as oplt

    directory.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    written, notes = [], []
    plots = {"history.png": oplt.plot_optimization_history, "importance.png": oplt.plot_param_importances}
    for name, plot in plots.items():
        needed = 2 if name == "importance.png" else 1
        if len(complete) < needed:
            notes.append(f"{name} not drawn: it needs {needed} completed trial(s), the study has {len(complete)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.set_size_inches(7, 4.2)
            fig.tight_layout()
            tmp = directory / f".{name}.{os.getpid()}.tmp.png"
            fig.savefig(tmp, dpi=110)
            plt.close(fig)
            tmp.replace(directory / name)
            written.append(directory / name)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. no param varies over the completed trials
            notes.append(f"{name} not drawn ({' '.join(str(err).split())[:160]})")
            plt.close("all")
    return written, notes


def write_best(result: TuneResult, path: Path) -> Path:
    return write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")


def write_tuned_yaml(parser: Any, config: Any, result: TuneResult, tuned_for: dict[str, Any], path: Path) -> Path:
    """The run's config with the chosen recipe in ``model``, ``tune.trials: 0`` and ``tune.tuned_for``, as train.py reads it."""
    cfg = config.clone()
    for key, value in result.recipe.items():
        cfg.model[key] = value
    cfg.tune.trials = 0
    cfg.tune.only = False
    cfg.tune.tuned_for = tuned_for
    cfg.ckpt_path = None
    with warnings.catch_warnings():
        # The spelling every jsonargparse das allows (>=4.27,<5) takes; 4.49 renamed it (skip_unset) and warns.
        # skip_none=False keeps keys set to null whose default is not (tune.logit_weight: null).
        warnings.simplefilter("ignore")
        text = parser.dump(cfg, skip_none=False, skip_check=True)
    accuracy = f"{result.val_acc:.2f}% validation accuracy after {config.tune.epochs} epoch(s)" if result.val_acc is not None else ""
    head = (f"# The recipe train.py's study chose (trial {result.trial}: {accuracy}).\n"
            "# python train.py --config THIS_FILE trains it again without a study (tune.trials 0); train.py refuses it\n"
            "# for a student or teacher other than tune.tuned_for's.\n")
    return write_atomic(path, head + text)
