"""The report's statistics, computed once per report: mean and sample std over seeds, Welch's
t-test of each configuration against the best, the Pareto fronts of accuracy for its cost, and
which measured costs are too noisy to read. numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05  # two-sided significance level of the test against the best configuration
TEST_NAME = "Welch's two-sample t-test (unequal variances, two-sided)"
TEST_FIELDS = ("welch_t_vs_best", "welch_df_vs_best", "welch_p_vs_best")
NOISY_SPREAD = 0.20  # a measured cost whose seeds differ by more than this (of their mean)


def finite(values: list[Any]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def mean_std(values: list[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (ddof=1, None for fewer than two values) and count of the finite values."""
    values = finite(values)
    if not values:
        return None, None, 0
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std, len(values)


# ----------------------------------------------------------------------------- Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
    in C, 2nd ed., section 6.4, ``betacf``)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (Numerical Recipes ``betai``)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t distribution with ``df`` (real, > 0) degrees of freedom."""
    if math.isnan(t) or not df > 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


@dataclass(frozen=True)
class WelchResult:
    t: float  # (mean_a - mean_b) / sqrt(var_a / n_a + var_b / n_b)
    df: float  # Welch-Satterthwaite degrees of freedom
    p: float  # two-sided
    n_a: int
    n_b: int
    diff: float  # mean_a - mean_b


def welch_t_test(a: list[float], b: list[float]) -> WelchResult | None:
    """Welch's unequal-variance t-test of mean(a) = mean(b), two-sided; None if either sample
    has fewer than two values (no variance to test with).

    Matches ``scipy.stats.ttest_ind(a, b, equal_var=False)``. Where both samples have zero
    variance (scipy gives nan), equal means give t = 0, p = 1 and different means t = +-inf,
    p = 0.
    """
    a, b = finite(a), finite(b)
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        return None
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    se_a, se_b = np.var(a, ddof=1) / n_a, np.var(b, ddof=1) / n_b
    diff = mean_a - mean_b
    se2 = float(se_a + se_b)
    if se2 == 0.0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return WelchResult(t, float(n_a + n_b - 2), 1.0 if diff == 0 else 0.0, n_a, n_b, diff)
    df = se2**2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))
    t = diff / math.sqrt(se2)
    return WelchResult(float(t), float(df), t_two_sided_p(t, df), n_a, n_b, diff)


# ----------------------------------------------------------------------------- vs the best


def ranked(configs: list[dict]) -> list[dict]:
    """The configurations with a mean objective, best first (``configs`` is sorted already)."""
    return [c for c in configs if c["objective_mean"] is not None]


def reference_config(configs: list[dict]) -> dict | None:
    """The configuration the others are tested against: the best (highest mean objective)
    among those with at least two seeds, so that a one-seed best does not leave everything
    untestable."""
    return next((c for c in ranked(configs) if len(c["objective_values"]) >= 2), None)


def test_against_best(configs: list[dict]) -> None:
    """Welch's t-test of every ranked configuration's objective values against those of
    :func:`reference_config`, run once: the result in ``welch`` (a :class:`WelchResult`, None
    where it cannot be tested, n < 2), its numbers in ``welch_t_vs_best``, ``welch_df_vs_best``
    and ``welch_p_vs_best``, and the reference's label in ``welch_reference``."""
    for config in configs:
        config.update(dict.fromkeys((*TEST_FIELDS, "welch_reference", "welch")))
    reference = reference_config(configs)
    if reference is None:
        return
    for other in ranked(configs):
        if other is reference:
            continue
        other["welch_reference"] = reference["label"]
        result = welch_t_test(reference["objective_values"], other["objective_values"])
        other["welch"] = result
        if result is not None:
            other.update(
                welch_t_vs_best=result.t, welch_df_vs_best=result.df, welch_p_vs_best=result.p
            )


test_against_best.__test__ = False  # not a pytest test, despite its name


# ----------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class CostAxis:
    name: str  # file suffix: acc_vs_<name>.png
    field: str  # config key of the value (lower is cheaper)
    std_field: str | None  # config key of its std over seeds
    label: str  # axis label
    counted: bool  # counted from the architecture (params, MACs) rather than measured
    log: bool
    unit: str = ""  # after a measured value in the text


COST_AXES = (
    CostAxis("macs", "macs", None, "MACs per image", True, True),
    CostAxis("params", "params", None, "parameters", True, True),
    CostAxis(
        "train_time",
        "train_ms_per_sample_mean",
        "train_ms_per_sample_std",
        "training time per sample (ms, = 1000 / train samples/s)",
        False,
        False,
        "ms/sample",
    ),
    CostAxis(
        "inference",
        "inference_ms_per_image_mean",
        "inference_ms_per_image_std",
        "inference latency (ms per image, batched)",
        False,
        False,
        "ms/image",
    ),
)


def cost(config: dict, axis: CostAxis) -> float | None:
    value = config.get(axis.field)
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def cost_axes(configs: list[dict]) -> list[CostAxis]:
    """The cost axes some ranked configuration has a value for."""
    return [axis for axis in COST_AXES if any(cost(c, axis) is not None for c in ranked(configs))]


def pareto_front(configs: list[dict], axis: CostAxis) -> list[dict]:
    """The configurations no other beats on both the mean objective (higher is better) and
    ``axis`` (lower is better): no other is at least as good on both and better on one.
    Sorted by cost, cheapest first."""
    points = [
        (value, c["objective_mean"], c)
        for c in configs
        if c.get("objective_mean") is not None and (value := cost(c, axis)) is not None
    ]
    front = [
        (value, acc, c)
        for value, acc, c in points
        if not any(oc <= value and oa >= acc and (oc < value or oa > acc) for oc, oa, _ in points)
    ]
    return [c for _, _, c in sorted(front, key=lambda p: (p[0], p[1], p[2]["label"]))]


def pareto_fronts(configs: list[dict]) -> dict[CostAxis, list[dict]]:
    """The front on every cost axis the configurations have."""
    return {axis: pareto_front(configs, axis) for axis in cost_axes(configs)}


def spread(values: list[float]) -> float | None:
    """(max - min) / mean of two or more positive values, else None."""
    values = finite(values)
    if len(values) < 2 or not np.mean(values) > 0:
        return None
    return (max(values) - min(values)) / float(np.mean(values))


def noisy_costs(configs: list[dict]) -> dict[str, list[tuple[dict, float]]]:
    """Per measured cost (training time, inference latency), the configurations whose values
    differ by more than ``NOISY_SPREAD`` of their mean across seeds, with that spread, largest
    first."""
    noisy = {}
    for name, field in (("training time per sample", "train_ms_per_sample_values"),
                        ("inference latency", "inference_ms_per_image_values")):
        found = [(c, s) for c in configs if (s := spread(c.get(field) or [])) is not None
                 and s > NOISY_SPREAD]
        if found:
            noisy[name] = sorted(found, key=lambda item: -item[1])
    return noisy
