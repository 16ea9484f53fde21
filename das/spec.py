"""Architecture specs: a frozen, hashable, JSON-serialisable description of one student.

A spec names its search space, the space's construction arguments (e.g. NB201's width C and
cells per stage N) and the choices that pick one architecture from it. Anything that holds a
spec (best_arch.json, a student checkpoint) can rebuild the network with :meth:`ArchSpec.build`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from das.errors import DasError

Scalar = str | int | float | bool

#: Builds a spec's network; :mod:`das.spaces` sets it on import (the spaces sit above the spec,
#: and importing them here would make each import the other).
_builder: Callable[[ArchSpec, int], nn.Module] | None = None


def set_builder(builder: Callable[[ArchSpec, int], nn.Module]) -> None:
    """Make :meth:`ArchSpec.build` call ``builder(spec, num_classes)``; :mod:`das.spaces` passes its registry's."""
    global _builder
    _builder = builder


def _freeze(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = []
    for key, value in sorted(mapping.items()):
        if isinstance(value, list):
            value = tuple(value)
        items.append((key, value))
    return tuple(items)


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of one search space.

    Attributes:
        space: the registered search-space name (``das.spaces``).
        choices: the sampled decisions, as sorted (key, value) pairs so the spec hashes.
        space_args: the keyword arguments the space was created with.
    """

    space: str
    choices: tuple[tuple[str, Any], ...]
    space_args: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(cls, space: str, choices: Mapping[str, Any], space_args: Mapping[str, Any] | None = None) -> ArchSpec:
        return cls(space, _freeze(choices), _freeze(space_args or {}))

    def choice(self, key: str) -> Any:
        return dict(self.choices)[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "choices": {k: list(v) if isinstance(v, tuple) else v for k, v in self.choices},
            "space_args": {k: list(v) if isinstance(v, tuple) else v for k, v in self.space_args},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        if not isinstance(data, Mapping):
            raise DasError(f"not an architecture spec (needs a JSON object with 'space' and 'choices'): {data!r}")
        try:
            return cls.make(data["space"], data["choices"], data.get("space_args", {}))
        except (KeyError, TypeError, AttributeError) as err:
            raise DasError(f"not an architecture spec (needs 'space' and 'choices'): {dict(data)!r}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write the spec (plus any extra fields, e.g. its score) to a JSON file."""
        Path(path).write_text(json.dumps({**self.to_dict(), **extra}, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        path = Path(path)
        if not path.is_file():
            raise DasError(f"architecture file {str(path)!r} does not exist; run search.py first or pass an existing file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DasError(f"architecture file {str(path)!r} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def build(self, num_classes: int) -> nn.Module:
        """Build the network this spec describes, with the space it names (:mod:`das.spaces`)."""
        if _builder is None:
            raise DasError(f"cannot build {self}: no search spaces are loaded; import das.spaces first")
        return _builder(self, num_classes)

    def __str__(self) -> str:
        body = ",".join(f"{k}={v}" for k, v in self.choices)
        return f"{self.space}({body})"
