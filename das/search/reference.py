"""The reference population an ``ensemble`` objective ranks candidates against.

A log-rank ensemble needs a population. During a search the population cannot be "the
candidates scored so far": a trial's value would then change as the study grows, and TPE would
learn from values that no longer hold. So das draws a fixed reference once, before the first
trial: ``size`` distinct random members of the space **within the budget** (so the ranks resolve
the networks the search can actually pick), scores the ensemble's members on them with the
study's probe batches, and saves them as ``ensemble_reference.json`` in the run directory and
in the study itself (a user attr). A resumed study, every worker of ``--workers N`` and every
machine sharing the study through an RDB storage read it back (from the study first), so every
trial, old and new, is ranked against the same population. Processes sharing a run directory
build it once: the others wait for it (an flock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from das.errors import DasError
from das.proxies import ENSEMBLE_MEMBERS, EnsembleReference, score
from das.proxies.context import Batch
from das.proxies.diswot import DisWOTReference
from das.search.config import BudgetConfig
from das.search.locks import exclusive
from das.spaces import SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params

REFERENCE_FILE = "ensemble_reference.json"
#: The study user attr that holds the reference (its ``to_json``), for workers on other machines.
REFERENCE_ATTR = "ensemble_reference"


def random_members(space: SearchSpace, seed: int) -> Callable[[], ArchSpec]:
    """Draw members of any space uniformly through its own ``suggest`` and Optuna's random sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    def draw() -> ArchSpec:
        trial = study.ask()
        spec = space.suggest(trial)
        study.tell(trial, 0.0)
        return spec

    return draw


def in_budget_members(space: SearchSpace, budget: BudgetConfig, num_classes: int, input_shape: tuple[int, ...],
                      seed: int, max_draws: int, device: torch.device | str = "cpu") -> Iterator[tuple[ArchSpec, torch.nn.Module, int]]:
    """Distinct random members of ``space`` within ``budget``, each built from ``seed``, with the draws so far.

    The draws are seeded, so the first k members are the same whatever the caller takes after
    them. It stops after ``max_draws`` draws: fewer members than wanted then means the budget
    leaves too few distinct ones, which the caller says in its own words.
    """
    draw = random_members(space, seed)
    seen: set[str] = set()
    for draws in range(1, max_draws + 1):
        spec = draw()
        key = space.canonical(spec)
        if key in seen:
            continue
        seen.add(key)
        torch.manual_seed(seed)
        model = spec.build(num_classes).to(device)
        if budget.max_params is not None and count_params(model) > budget.max_params:
            continue
        if budget.max_flops is not None and count_flops(model, input_shape) > budget.max_flops:
            continue
        yield spec, model, draws


def build_reference(
    space: SearchSpace,
    batches: list[Batch],
    budget: BudgetConfig,
    num_classes: int,
    device: torch.device,
    size: int,
    seed: int,
    teacher: DisWOTReference | None = None,
    max_draws_per_member: int = 50,
) -> EnsembleReference:
    """Score the ensemble's members on ``size`` distinct random in-budget members of ``space``."""
    if size < 2:
        raise DasError(f"study.reference_size={size}; the ensemble's reference needs at least 2 architectures (100 is a good size)")
    input_shape = tuple(batches[0][0].shape[1:])
    max_draws = max_draws_per_member * size
    population: list[dict[str, float]] = []
    draws = 0
    with tqdm(total=size, desc="ensemble reference", unit="arch") as bar:
        for _, model, draws in in_budget_members(space, budget, num_classes, input_shape, seed, max_draws, device):
            population.append(score(model, batches, list(ENSEMBLE_MEMBERS), teacher=teacher, seed=seed))
            bar.update(1)
            if len(population) == size:
                break
    if len(population) < size:
        raise DasError(
            f"found only {len(population)} distinct architectures within the budget ({budget}) in {max_draws} random draws; "
            f"lower study.reference_size (now {size}) or loosen the budget"
        )
    return EnsembleReference.from_population(population, settings={"size": size, "seed": seed, "space": space.name, "draws": draws})


def load_or_build_reference(run_dir: Path, log: Callable[[str], None], study: optuna.Study | None = None,
                            **build_args) -> EnsembleReference:
    """The study's reference (or the run directory's) if it has one with the same members, else a new one (saved to both)."""
    path = run_dir / REFERENCE_FILE
    with exclusive(run_dir / f".{REFERENCE_FILE}.lock"):  # one process of a run dir builds it, the others read it
        stored = study.user_attrs.get(REFERENCE_ATTR) if study is not None else None
        reference, where = None, None
        if stored:
            reference, where = EnsembleReference.from_json(stored), f"the study ({path.name} beside it)"
        elif path.exists():
            reference, where = EnsembleReference.load(path), str(path)
        if reference is not None:
            if tuple(reference.members) != ENSEMBLE_MEMBERS or reference.settings.get("size") != build_args["size"]:
                raise DasError(
                    f"the ensemble reference in {where} was built for members {list(reference.members)} and size "
                    f"{reference.settings.get('size')}; this search needs {list(ENSEMBLE_MEMBERS)} and size {build_args['size']}: "
                    "use a new --run_dir"
                )
            log(f"search: ensemble ranks against the {reference.size} reference architectures in {where}")
        else:
            log(f"search: scoring a reference population of {build_args['size']} random in-budget architectures for the ensemble")
            reference = build_reference(**build_args)
        if not path.exists():
            reference.save(path)
        if study is not None and not stored:
            study.set_user_attr(REFERENCE_ATTR, reference.to_json())
    return reference
