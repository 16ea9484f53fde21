"""Is the distilled student really worse than the same student trained alone?

Both students are tested on the same n held-out images. Rule (documented in docs/guide.md): the
gap between two accuracies p1, p2 measured on n test images has a binomial standard error of
sqrt(p(1 − p) · 2 / n), with p their mean; a difference within two standard errors
(``seed_noise``, about a 95% band) is what another seed or another test sample could give, so
only ``alone − distilled > seed_noise`` is reported as "distilled worse than alone". This
treats the two test runs as independent samples and ignores training-seed variance beyond
that, so it is a floor on the noise, not a significance test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def seed_noise(acc_a: float, acc_b: float, n: int) -> float:
    """Two binomial standard errors of the difference of two accuracies (in %) on ``n`` images, in points."""
    if n < 1:
        raise ValueError("seed_noise needs at least one test image")
    p = (acc_a + acc_b) / 200.0
    return 100.0 * 2.0 * math.sqrt(p * (1.0 - p) * 2.0 / n)


@dataclass(frozen=True)
class Comparison:
    """Distilled against alone on the same test images, with the teacher on them too."""

    teacher_test_acc: float
    distilled_test_acc: float
    baseline_test_acc: float
    test_images: int
    distillation_gain: float  # distilled − alone, in points
    seed_noise: float  # two standard errors of that gain, in points
    distilled_worse_than_alone: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def compare(teacher: float, distilled: float, alone: float, n: int) -> Comparison:
    """Compare accuracies (in %) measured on the same ``n`` test images."""
    noise = seed_noise(distilled, alone, n)
    gain = distilled - alone
    return Comparison(teacher, distilled, alone, n, gain, noise, -gain > noise)


def likely_causes(c: Comparison, kd_weight: float, kd_temperature: float, feature_scale: float, epochs: int) -> list[str]:
    """What usually makes distillation lose to training alone, most specific first."""
    causes = []
    if c.teacher_test_acc <= c.baseline_test_acc + c.seed_noise:
        causes.append(f"a weak teacher ({c.teacher_test_acc:.2f}%, not clearly above the student alone's {c.baseline_test_acc:.2f}%)")
    causes += [
        f"losses.kd weight={kd_weight:g} / temperature={kd_temperature:g} (try a lower weight, or T between 2 and 4)",
        f"too few epochs ({epochs}; a distilled student often needs more than one trained alone)",
        f"the feature loss (cosine weight × scale = {feature_scale:g}; try weight 0 to drop it)",
    ]
    return causes


def verdict(c: Comparison, **settings: float) -> str:
    """One line on the gain against the seed noise; a warning naming likely causes when distilled lost beyond it."""
    noise = f"the ±{c.seed_noise:.2f}-point seed noise on {c.test_images} test images"
    if not c.distilled_worse_than_alone:
        where = "beyond" if abs(c.distillation_gain) > c.seed_noise else "within"
        return f"distillation {c.distillation_gain:+.2f} points: {where} {noise}"
    causes = "; ".join(likely_causes(c, **settings))  # type: ignore[arg-type]
    return (f"warning: distilled is {-c.distillation_gain:.2f} points below trained alone, beyond {noise}; "
            f"likely causes: {causes}")
