"""A user's own define-by-run search space: ``--space.name my_pkg.my_mod:my_space``, no class to write.

The function takes an Optuna trial, asks it for whatever it needs with ``trial.suggest_*`` and
returns the network (Optuna's define-by-run style, Akiba et al., "Optuna: A Next-generation
Hyperparameter Optimization Framework", KDD 2019, §2)::

    def my_space(trial, num_classes=10):
        width = trial.suggest_categorical("width", [8, 16, 32])
        depth = trial.suggest_int("depth", 1, 4)
        return MyNet(width, depth, num_classes)

das records the trial's params (``trial.params`` after the call) as the spec's choices, and
rebuilds the network (train.py, a resumed search) by calling the same function with an
``optuna.trial.FixedTrial`` of those choices. The function must therefore ask for the same
params with the same ranges whenever it is given the same values, and what it asks must not
depend on ``num_classes`` (a candidate is sampled before the class count is known).

- ``num_classes`` is passed when the function takes it (or ``**kwargs``);
- ``space.args`` are passed as keyword arguments: ``def my_space(trial, max_width=64)`` takes
  ``--space.args '{max_width: 32}'``, and a spec records them (defaults filled in);
- the network may declare ``feature_points()``; otherwise das infers its final map and
  classifier with one dry forward pass (:func:`das.features.feature_points`);
- the space is not finite unless the function says so (``my_space.finite = True``, when every
  param is categorical, an integer or a stepped float); then :meth:`UserSpace.enumerate` walks
  every branch of the function's choices.

Sampling calls the function on PyTorch's ``meta`` device (no memory, no weight init), so drawing
a candidate costs nothing even for a large network; a function that cannot run there is called
normally.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial
import torch
from torch import nn

from das.errors import DasError
from das.importing import import_function
from das.spaces.base import SearchSpace
from das.spec import ArchSpec

#: The class count the function is given while a candidate is sampled (see the module docstring).
SAMPLING_CLASSES = 10

_EXAMPLE = "my_pkg.my_mod:my_space"


class UserSpace(SearchSpace):
    """The space of one user function; :func:`user_space` makes the class bound to it.

    ``name`` is the ``package.module:function`` string, so a spec's ``space`` names the function
    and ``ArchSpec.build`` finds it again through :func:`das.spaces.create_space`.
    """

    function: Callable[..., Any]

    def __init__(self, **args: Any) -> None:
        signature = _args_signature(self.function, self.name)
        params = signature.parameters.values()
        accepted = [p.name for p in params if p.kind is not p.VAR_KEYWORD]
        unknown = [] if any(p.kind is p.VAR_KEYWORD for p in params) else sorted(set(args) - set(accepted))
        if unknown:
            raise DasError(f"space.args {unknown} are not arguments of {self.name!r}; accepted: {', '.join(accepted) or 'none'}")
        missing = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in args]
        if missing:
            raise DasError(f"{self.name!r} needs space.args {missing}, which have no default; give them with --space.args")
        bound = signature.bind(**args)
        bound.apply_defaults()
        full = dict(bound.arguments)
        for p in signature.parameters.values():  # a **kwargs catch-all is flattened into the args
            if p.kind is p.VAR_KEYWORD:
                full.update(full.pop(p.name, {}))
        self.args = full
        super().__init__(**full)

    @property
    def finite(self) -> bool:  # type: ignore[override]
        """Whether the function says so (``my_space.finite = True``)."""
        flag = getattr(self.function, "finite", False)
        if not isinstance(flag, bool):
            raise DasError(f"{self.name!r}.finite must be True or False, got {flag!r}")
        return flag

    def suggest(self, trial: optuna.Trial) -> ArchSpec:
        """Call the function with ``trial`` (on the meta device) and record the params it asked for."""
        self._sample(trial)
        return self.spec(**trial.params)

    def build(self, spec: ArchSpec, num_classes: int) -> nn.Module:
        """The function's network for the spec's choices (a ``FixedTrial`` of them)."""
        if spec.space != self.name:
            raise DasError(f"cannot build a {spec.space!r} architecture with the {self.name!r} space")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
        choices = dict(spec.choices)
        trial = _ReplayTrial(choices, self.name)
        model = self._call(trial, num_classes)
        unused = sorted(set(choices) - set(trial.params))
        if unused:
            raise DasError(
                f"{self.name!r} did not ask for {', '.join(map(repr, unused))} of spec {spec}; the spec is from "
                "another version of the function: rerun the search, or make it ask for the same params"
            )
        return model

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every branch of the function's choices, depth first (only when it says it is finite)."""
        if not self.finite:
            raise DasError(f"space {self.name!r} is not finite; set {self.name.rpartition(':')[2]}.finite = True if every param it asks for has finitely many values")
        path: list[int] = []
        while True:
            trial = _TreeTrial(path, self.name)
            self._sample(trial)
            yield self.spec(**trial.params)
            path, counts = trial.path, trial.counts
            while path and path[-1] + 1 >= counts[len(path) - 1]:
                path.pop()
            if not path:
                return
            path[-1] += 1

    def _sample(self, trial: optuna.Trial | FixedTrial) -> None:
        """Call the function for its params only: on the meta device, else (it cannot run there) normally.

        A second call with the same trial asks the same params and gets the same values back.
        """
        try:
            with torch.device("meta"):
                self._call(trial, SAMPLING_CLASSES)
        except DasError:
            raise
        except Exception:  # noqa: BLE001
            self._call(trial, SAMPLING_CLASSES)

    def _call(self, trial: optuna.Trial | FixedTrial, num_classes: int) -> nn.Module:
        kwargs = dict(self.args)
        if _accepts_num_classes(self.function):
            kwargs["num_classes"] = num_classes
        model = self.function(trial, **kwargs)
        if not isinstance(model, nn.Module):
            raise DasError(f"space function {self.name!r} returned a {type(model).__name__}, not a torch.nn.Module; return the network")
        return model

    def __reduce__(self) -> tuple:
        # The class is made per function at run time, so pickle (spawned workers) by name and args.
        return (_create, (self.name, self.args))


def user_space(spec: str) -> type[UserSpace]:
    """The :class:`UserSpace` subclass of ``package.module:function``, with its arguments as ``__init__``'s.

    Raises:
        DasError: a malformed spec, a module that cannot be imported, a missing function, or a
            function that takes no trial.
    """
    module_name, _, attr = spec.strip().partition(":")
    function = import_function(
        module_name, attr, spec, what="space", example=_EXAMPLE,
        expected="a function that takes an Optuna trial and returns an nn.Module",
    )
    signature = _args_signature(function, spec.strip())

    def __init__(self: UserSpace, **args: Any) -> None:
        UserSpace.__init__(self, **args)

    # make_space reads __init__'s signature to check space.args and fill in defaults.
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()]
    )
    body = {"name": spec.strip(), "function": staticmethod(function), "__init__": __init__, "__module__": __name__}
    return type(f"UserSpace[{spec.strip()}]", (UserSpace,), body)


def _create(name: str, args: dict[str, Any]) -> UserSpace:
    return user_space(name)(**args)


def _args_signature(function: Callable[..., Any], name: str) -> inspect.Signature:
    """The function's keyword arguments after the trial, without ``num_classes`` (das passes that)."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin or C extension with no signature: trial only
        return inspect.Signature([])
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    if not params or params[0].kind not in positional:
        raise DasError(f"space function {name!r} must take an Optuna trial as its first argument, e.g. def my_space(trial, num_classes=10)")
    rest = [p for p in params[1:] if p.name != "num_classes" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is not p.VAR_KEYWORD else p for p in rest]
    return inspect.Signature(rest)


def _accepts_num_classes(function: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)


class _ReplayTrial(FixedTrial):
    """A FixedTrial that refuses, in one line, a param the spec lacks or a value outside its range."""

    def __init__(self, params: dict[str, Any], space: str) -> None:
        super().__init__(params)
        self._space = space

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self._params:
            raise DasError(
                f"{self._space!r} asks for param {name!r}, which the spec's choices lack (they have "
                f"{', '.join(sorted(self._params)) or 'none'}); the spec is from another version of the function: "
                "rerun the search, or give the param in the spec's choices"
            )
        value = self._params[name]
        try:
            ok = distribution._contains(distribution.to_internal_repr(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DasError(f"{self._space!r} asks for {name!r} in {distribution}, but the spec has {name}={value!r}; fix the spec or the function")
        return super()._suggest(name, distribution)


class _TreeTrial(FixedTrial):
    """Takes, at its k-th new param, option ``path[k]`` (the first once past the path) and records how many there were."""

    def __init__(self, path: list[int], space: str) -> None:
        super().__init__({})
        self.path = list(path)
        self.counts: list[int] = []
        self._space = space

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name in self._suggested_params:  # asked twice: the same value, as Optuna does
            return self._suggested_params[name]
        options = _options(name, distribution, self._space)
        k = len(self.counts)
        if k == len(self.path):
            self.path.append(0)
        self.counts.append(len(options))
        value = options[self.path[k]]
        self._suggested_params[name] = value
        self._distributions[name] = distribution
        return value


def _options(name: str, distribution: BaseDistribution, space: str) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, 1 if distribution.log else distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = round((distribution.high - distribution.low) / distribution.step)
        return [distribution.low + i * distribution.step for i in range(n + 1)]
    raise DasError(f"{space!r} says it is finite, but param {name!r} is continuous ({distribution}); give it a step, or drop finite = True")
