"""One small generic registry, used for proxies, search spaces, teachers, datasets and losses.

Registries are das's extension points: a user adds a proxy or a teacher with a decorator and
every command line can then name it. A duplicate name raises (two things silently answering to
one name is a bug), and an unknown name lists the close matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from das.errors import DasError, close_matches_hint

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories) of one kind.

    Args:
        kind: what is registered, used in error messages ("proxy", "teacher", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the object under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register an unnamed {self.kind}")
            self.add(key, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        self._meta[name] = dict(meta)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered under it (an unknown name lists the close matches)."""
        obj = self.get(name)
        del self._items[name]
        del self._meta[name]
        return obj

    @contextmanager
    def registered(self, name: str, obj: T, **meta: Any) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the duration of a ``with`` block (a test's own proxy or space)."""
        self.add(name, obj, **meta)
        try:
            yield obj
        finally:
            self.unregister(name)

    @contextmanager
    def temporary(self) -> Iterator[Registry[T]]:
        """A ``with`` block after which the registry holds exactly what it held before it (registrations made inside are undone)."""
        items, meta = dict(self._items), {k: dict(v) for k, v in self._meta.items()}
        try:
            yield self
        finally:
            self._items, self._meta = items, meta

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise DasError(
                f"unknown {self.kind} {name!r}: {close_matches_hint(name, self._items)}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
