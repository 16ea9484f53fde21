"""Run this process's trials on a prepared search, with a progress bar and a clean Ctrl-C."""

from __future__ import annotations

import optuna
from tqdm.auto import tqdm

from das.search.ledger import DUPLICATE, KIND, SCORED
from das.search.prepare import Prepared
from das.search.study import Interruptible, release_dead_trials, release_own_trials, stop_on_interrupt


def optimize_here(p: Prepared, progress: bool = True) -> bool:
    """Run this process's trials until the study has its count (or stops early); return whether Ctrl-C stopped it.

    Ctrl-C lets the running trial finish (a second one abandons it); a trial left RUNNING by a
    Ctrl-C between its creation and its start, or by a process that died meanwhile, is released.
    """
    optuna_study, names, objective_name = p.optuna_study, p.names, p.proxies[0]
    runner = Interruptible(p.objective)
    interrupted = False
    before = p.before
    with tqdm(total=p.study.trials, initial=min(before.scored, p.study.trials), desc="search", unit="arch", disable=not progress) as bar:
        seen = {"duplicates": before.duplicates, "over budget": before.infeasible}

        def show(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            kind = trial.user_attrs.get(KIND)
            if trial.state == optuna.trial.TrialState.PRUNED or kind is None:  # surplus or interrupted: not counted
                return
            if kind == SCORED:
                bar.update(1)
            else:
                seen["duplicates" if kind == DUPLICATE else "over budget"] += 1
            postfix = dict(seen)
            if len(names) == 1:
                try:
                    postfix = {objective_name: f"{st.best_value:.4g}", **postfix}
                except ValueError:  # no feasible trial yet
                    pass
            bar.set_postfix(postfix)

        try:
            with stop_on_interrupt(optuna_study) as ctrl_c:
                optuna_study.optimize(runner, callbacks=[show], catch=(FloatingPointError,))
        except KeyboardInterrupt:  # a second Ctrl-C; inside a trial, the runner catches it
            interrupted = True
    interrupted = interrupted or ctrl_c["stopped"] or runner.interrupted
    release_own_trials(optuna_study)  # a Ctrl-C between a trial's creation and its start
    release_dead_trials(optuna_study)  # a process killed just before this run started is judged again
    return interrupted
