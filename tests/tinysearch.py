"""A tiny finite space with isomorphs and run_search arguments for searches of seconds (tests/search)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch import nn

from das.data import DasDataModule
from das.search import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.spaces import SearchSpace
from das.spec import ArchSpec
from tests.tinynets import TinyNet


class ToySpace(SearchSpace):
    """8 members, 4 distinct networks: ``pad`` changes nothing, so members differing only in it are isomorphs."""

    name = "toy"
    finite = True
    WIDTHS, DEPTHS, PADS = (2, 4), (1, 2), ("a", "b")

    def __init__(self) -> None:
        super().__init__()

    def suggest(self, trial) -> ArchSpec:
        return self.spec(width=trial.suggest_categorical("width", self.WIDTHS), depth=trial.suggest_categorical("depth", self.DEPTHS),
                         pad=trial.suggest_categorical("pad", self.PADS))

    def build(self, spec: ArchSpec, num_classes: int) -> nn.Module:
        return TinyNet(width=spec.choice("width"), depth=spec.choice("depth"), num_classes=num_classes)

    def enumerate(self) -> Iterator[ArchSpec]:
        for width, depth, pad in itertools.product(self.WIDTHS, self.DEPTHS, self.PADS):
            yield self.spec(width=width, depth=depth, pad=pad)

    def canonical(self, spec: ArchSpec) -> str:
        return f"w{spec.choice('width')}d{spec.choice('depth')}"


def search_args(run_dir, ckpt: str, trials: int, space: SpaceConfig | None = None, budget: dict | None = None,
                **study: Any) -> dict[str, Any]:
    """run_search's arguments for a search of seconds: 8×8 digits, NB201 at C=2, N=1, DisWOT unless told.

    DisWOT, not the code's default objective: these tests are about the search's machinery with
    a teacher-aware objective (tests/search/test_search.py runs the default).
    """
    single = {} if "objectives" in study else {"objective": "diswot"}
    study = {"probe_batch_size": 16, "sampler": "random", "report": [], **single, **study}
    return dict(
        run_dir=run_dir,
        data=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[]),
        teacher=TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=ckpt),
        space=space or SpaceConfig(name="nb201", args={"C": 2, "N": 1}),
        budget=BudgetConfig(**(budget or {})),
        study=StudyConfig(trials=trials, **study),
        device="cpu",
        log=lambda *_: None,
    )
