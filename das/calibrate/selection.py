"""Fit a selection rule on a few distilled calibration students: the objective a search ranks by.

No zero-cost score has carried from one population of students to the next (docs/results.md:
the default that led on NAS-Bench-201 cells ranked 31st of 33 on CIFAR ResNets), so the rule is
fitted on the user's own students at run time. Given K calibration students' scores and their
distilled accuracies, :func:`fit_selection` considers a fixed, short list of candidate rules and
keeps the one with the lowest cross-validated regret on the K:

- ``params``: the larger network first (log parameters);
- each single score given (every registered proxy is "higher is better");
- ``ridge``: a ridge regression of the accuracy on the scores of :data:`COMBINED` that are given,
  each transformed by a signed log (``sign(x)·log(1 + |x|)``; params by ``log``) and
  standardised with the K's mean and deviation, with penalty :data:`RIDGE_ALPHA` on standardised
  accuracy. The few-shot combinations that agree best with trained accuracy on NAS benchmarks
  are of this kind (a ridge on proxy ranks with 10 labelled architectures, NAS-Bench-Suite-Zero,
  NeurIPS 2022; RoBoT, ICLR 2024, weights proxies with a few labelled architectures).
  Standardised values, not ranks, so that one student scored alone (a search trial) has a value,
  and students beyond the calibration range extrapolate instead of tying at the end.

**Cross-validated regret** (the criterion, in accuracy points): every way (at most
:data:`MAX_SPLITS`, drawn with a fixed seed) of holding out ``h = max(2, K // 2)`` of the K
students; each rule is fitted on the others, picks its top held-out student, and loses the best
held-out accuracy minus the picked one. The mean over splits is a rule's regret; the lowest
wins, ties going to the earlier candidate (params, then the single scores in the order given,
then ridge), so a rule replaces ``params`` only when it did strictly better. ``ridge`` needs at
least :data:`MIN_FIT` students to fit on, so it is a candidate only from ``K - h >= MIN_FIT``.
The chosen rule's regret is :attr:`Selection.expected_regret`; picked as the lowest of several,
it is optimistic, and :meth:`Selection.describe` says so.

A pure function of its inputs: no benchmark accuracy and no committed figure enters it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from das.errors import DasError

#: The size baseline every other rule must beat on the calibration students.
BASELINE = "params"
#: The scores the ridge combines when given: size, MeCo (the default objective on NAS-Bench-201
#: cells) and AZ-NAS's three non-size components, which its paper built to be complementary
#: (expressivity, progressivity, trainability; Lee & Ham, CVPR 2024).
COMBINED: tuple[str, ...] = ("params", "meco", "az_expressivity", "az_progressivity", "az_trainability")
#: Ridge penalty on standardised features and accuracy: shrinks toward no preference when K is small.
RIDGE_ALPHA = 1.0
#: Fewest students a ridge is fitted on (inside a split).
MIN_FIT = 3
#: Fewest calibration students.
MIN_STUDENTS = 3
#: Most held-out splits evaluated (all of them when there are fewer).
MAX_SPLITS = 500


def signed_log(x: np.ndarray) -> np.ndarray:
    """A monotone squash of heavy-tailed scores (SynFlow spans orders of magnitude)."""
    return np.sign(x) * np.log1p(np.abs(x))


def _transform(name: str, values: np.ndarray) -> np.ndarray:
    if name == BASELINE:
        return np.log(np.maximum(values, 1.0))
    return signed_log(values)


@dataclass(frozen=True)
class Rule:
    """One candidate: a single score (``weights`` None) or a fitted linear combination."""

    name: str
    features: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def objective(self, scores: Mapping[str, Sequence[float]]) -> np.ndarray:
        """Higher is better; a student with a missing or non-finite feature gets -inf (ranks last)."""
        missing = [f for f in self.features if f not in scores]
        if missing:
            raise DasError(f"selection rule {self.name!r} needs the scores {missing}; these students have {sorted(scores)}")
        columns = [np.asarray(scores[f], dtype=np.float64) for f in self.features]
        if self.weights is None:
            out = _transform(self.features[0], columns[0])
        else:
            z = [(_transform(f, c) - m) / s for f, c, m, s in zip(self.features, columns, self.mean, self.std)]
            out = np.sum([w * zi for w, zi in zip(self.weights, z)], axis=0)
        out = np.asarray(out, dtype=np.float64)
        return np.where(np.isfinite(out), out, -np.inf)

    def describe(self) -> str:
        if self.weights is None:
            return self.name
        terms = " ".join(f"{w:+.2f}·z({f})" for f, w in zip(self.features, self.weights))
        return f"ridge: {terms}"


def fit_ridge(columns: Mapping[str, np.ndarray], accuracy: np.ndarray, alpha: float = RIDGE_ALPHA) -> Rule | None:
    """Ridge on standardised transformed features; None when no feature varies over these students."""
    names, zs, means, stds = [], [], [], []
    for name, values in columns.items():
        t = _transform(name, values)
        if not np.all(np.isfinite(t)):
            continue
        sd = float(t.std())
        if sd <= 1e-12:
            continue
        names.append(name)
        means.append(float(t.mean()))
        stds.append(sd)
        zs.append((t - t.mean()) / sd)
    if not names:
        return None
    x = np.stack(zs, axis=1)
    y_sd = float(accuracy.std())
    y = (accuracy - accuracy.mean()) / (y_sd if y_sd > 0 else 1.0)
    w = np.linalg.solve(x.T @ x + alpha * np.eye(len(names)), x.T @ y)
    return Rule("ridge", tuple(names), tuple(float(v) for v in w), tuple(means), tuple(stds))


def _single(name: str) -> Rule:
    return Rule(name, (name,))


def _splits(k: int, held: int, seed: int) -> list[tuple[int, ...]]:
    total = math.comb(k, held)
    if total <= MAX_SPLITS:
        return list(itertools.combinations(range(k), held))
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < MAX_SPLITS:
        seen.add(tuple(sorted(rng.choice(k, size=held, replace=False).tolist())))
    return sorted(seen)


def _pick_regret(objective: np.ndarray, accuracy: np.ndarray) -> float:
    """Best accuracy minus the accuracy of the top-ranked student (ties: their mean)."""
    top = objective == objective.max()
    return float(accuracy.max() - accuracy[top].mean())


@dataclass(frozen=True)
class Selection:
    """The rule a search ranks by, fitted on K calibration students.

    Attributes:
        rule: the chosen candidate, fitted on all K.
        expected_regret: its cross-validated regret on the K (points; optimistic, being the lowest).
        regrets: every candidate's cross-validated regret, in candidate order.
        students: K.
        held_out: students held out per split.
        splits: splits evaluated.
        notes: candidates left out and why.
    """

    rule: Rule
    expected_regret: float
    regrets: dict[str, float]
    students: int
    held_out: int
    splits: int
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def features(self) -> tuple[str, ...]:
        return self.rule.features

    def objective(self, scores: Mapping[str, Sequence[float]]) -> np.ndarray:
        """The rule's value for each student of ``scores`` (same score names as the K): higher is better."""
        return self.rule.objective(scores)

    def describe(self) -> str:
        others = ", ".join(f"{k} {v:.2f}" for k, v in self.regrets.items() if k != self.name)
        text = (f"selection: {self.rule.describe()} (cross-validated regret {self.expected_regret:.2f} points on {self.students} "
                f"calibration students, {self.splits} splits holding out {self.held_out}; optimistic, being the lowest of "
                f"{len(self.regrets)}; others: {others})")
        return text + "".join(f"; {n}" for n in self.notes)

    def to_dict(self) -> dict:
        r = self.rule
        return {"name": r.name, "features": list(r.features), "weights": None if r.weights is None else list(r.weights),
                "mean": list(r.mean), "std": list(r.std), "expected_regret": self.expected_regret, "regrets": self.regrets,
                "students": self.students, "held_out": self.held_out, "splits": self.splits, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Selection:
        weights = data.get("weights")
        rule = Rule(data["name"], tuple(data["features"]), None if weights is None else tuple(weights),
                    tuple(data.get("mean", ())), tuple(data.get("std", ())))
        return cls(rule, float(data["expected_regret"]), dict(data["regrets"]), int(data["students"]), int(data["held_out"]),
                   int(data["splits"]), tuple(data.get("notes", ())))


def fit_selection(scores: Mapping[str, Sequence[float]], accuracy: Sequence[float], seed: int = 0) -> Selection:
    """Choose and fit the selection rule on K calibration students (see the module docstring).

    Args:
        scores: each score's values on the K students, ``params`` included (its parameter counts).
        accuracy: the K students' distilled accuracies, in the same order.
        seed: draws the held-out splits when there are more than :data:`MAX_SPLITS`.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    k = len(acc)
    if k < MIN_STUDENTS:
        raise DasError(f"calibration needs at least {MIN_STUDENTS} students with an accuracy, got {k}")
    if not np.all(np.isfinite(acc)):
        bad = [i for i, a in enumerate(acc) if not math.isfinite(a)]
        raise DasError(f"calibration accuracies must be finite; students {bad} have none (a diverged run): drop them or retrain")
    if float(acc.max() - acc.min()) <= 1e-9:
        raise DasError(f"all {k} calibration accuracies equal {acc[0]:.2f}: they cannot rank a rule; distil for longer or on more images")
    if BASELINE not in scores:
        raise DasError(f"calibration scores must include {BASELINE!r} (the size baseline); got {sorted(scores)}")
    columns: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name, values in scores.items():
        col = np.asarray(values, dtype=np.float64)
        if col.shape != (k,):
            raise DasError(f"score {name!r} has {col.size} values for {k} calibration students")
        if not np.all(np.isfinite(col)):
            notes.append(f"{name} left out: not finite on {int((~np.isfinite(col)).sum())} of {k} students")
            continue
        columns[name] = col
    if BASELINE not in columns:
        raise DasError(f"{BASELINE!r} must be finite for every calibration student")
    candidates: list[str] = [BASELINE] + [n for n in columns if n != BASELINE]
    held = max(2, k // 2)
    combined = {n: columns[n] for n in COMBINED if n in columns}
    use_ridge = k - held >= MIN_FIT and len(combined) >= 2
    if not use_ridge:
        notes.append(f"ridge left out: needs {MIN_FIT + held}+ students and 2+ of {list(COMBINED)}")
    splits = _splits(k, held, seed)
    regrets: dict[str, list[float]] = {name: [] for name in candidates + (["ridge"] if use_ridge else [])}
    for out in splits:
        mask = np.zeros(k, dtype=bool)
        mask[list(out)] = True
        test_acc = acc[mask]
        for name in candidates:
            regrets[name].append(_pick_regret(_single(name).objective({name: columns[name][mask]}), test_acc))
        if use_ridge:
            rule = fit_ridge({n: c[~mask] for n, c in combined.items()}, acc[~mask])
            value = np.zeros(mask.sum()) if rule is None else rule.objective({n: c[mask] for n, c in combined.items()})
            regrets["ridge"].append(_pick_regret(value, test_acc))
    mean = {name: float(np.mean(v)) for name, v in regrets.items()}
    best = min(mean, key=lambda n: (mean[n], list(mean).index(n)))
    if best == "ridge":
        rule = fit_ridge(combined, acc)
        assert rule is not None  # the splits fitted it, so the whole set varies too
    else:
        rule = _single(best)
    return Selection(rule, mean[best], mean, k, held, len(splits), tuple(notes))
