"""Compare the jobs of a Hydra multirun: one row per configuration, seeds pooled.

    python -m convexp.compare <multirun dir> [--out DIR] [--no-plots]
                              [--wandb [--project P] [--entity E] [--group G] [--wandb-mode M]]

Reads every ``summary.json`` under the multirun directory (skipping ``wandb`` and ``.hydra``),
groups jobs that differ only in ``seed`` into one configuration, prints a table ranked by mean
test accuracy, tests each configuration against the best one (Welch's t-test), lists the failed
jobs, and writes into ``<multirun dir>/report/``:

* ``comparison.csv`` and ``comparison.md`` (the table, the test, the Pareto fronts, the ERFs);
* ``acc_vs_cost.png`` (one panel per cost: MACs, parameters, training time per sample,
  inference latency, where the jobs recorded it) and the same panels one per file
  (``acc_vs_macs.png``, ``acc_vs_params.png``, ``acc_vs_train_time.png``,
  ``acc_vs_inference.png``), each with the Pareto front;
* ``heatmap.png``: mean test accuracy per kernel x dilation, one panel per conv operator, one
  colour scale;
* ``erf.png``: the effective receptive fields per operator, kernel and dilation, when the jobs
  saved them (``erf_npy`` or ``erf_png`` in summary.json).

Statistics use completed jobs only; std is the sample standard deviation (ddof=1) over seeds
and is left empty when a configuration has a single seed. The CSV holds accuracies as
fractions, as in ``summary.json``; the printed and Markdown tables show percentages.

This module imports neither torch nor wandb at import time (``--wandb`` imports wandb).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convexp._format import si, text_table
from convexp.erf_maps import draw_erf, erf_stats

SKIP_DIRS = {"wandb", ".hydra"}
STATUS_ORDER = ("completed", "diverged", "failed", "interrupted")
METRICS = ("test_acc", "best_val_acc", "final_val_acc", "train_samples_per_s")
# Measured per job (train_us_per_sample is derived: 1e6 / train_samples_per_s).
EXTRA_METRICS = ("train_us_per_sample", "inference_ms_per_image", "erf_95")
SHAPE_FIELDS = ("params", "macs", "receptive_field")
RATIO_FIELDS = ("param_ratio_vs_standard", "macs_ratio_vs_standard")
TEST_FIELDS = ("welch_t_vs_best", "welch_df_vs_best", "welch_p_vs_best")
CSV_COLUMNS = [
    "label",
    "variant",
    "kernel_size",
    "dilation",
    "channels",
    "padding",
    *SHAPE_FIELDS,
    *RATIO_FIELDS,
    *(f"{metric}_{stat}" for metric in METRICS for stat in ("mean", "std", "n")),
    "n_jobs",
    "n_completed",
    "seeds",
    "status",
    "reasons",
    "overrides",
    "job_dirs",
    # added after the original columns, so positional readers keep working
    "model",
    "operator",
    *(f"{metric}_{stat}" for metric in EXTRA_METRICS for stat in ("mean", "std", "n")),
    "test_acc_values",
    *TEST_FIELDS,
    "welch_reference",
]
STD_NOTE = "std = sample standard deviation over seeds (ddof=1); only completed jobs count"
ALPHA = 0.05  # two-sided significance level of the test against the best configuration
TEST_NAME = "Welch's two-sample t-test (unequal variances, two-sided)"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
STANDARD_CONV = "standard conv"
SEPARABLE_CONV = "depthwise-separable conv"


# ----------------------------------------------------------------------------- loading


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def load_summaries(path: str | Path) -> list[dict]:
    """All ``summary.json`` objects under ``path``, each with ``job_dir`` (relative) added.

    An unreadable file becomes a failed job whose reason says why.
    """
    root = Path(path)
    summaries = []
    for file in root.rglob("summary.json"):
        job_dir = file.parent.relative_to(root)
        if SKIP_DIRS.intersection(job_dir.parts):
            continue
        try:
            summary = json.loads(file.read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            summary = {"status": "failed", "reason": f"unreadable summary.json: {err}"}
        summary["job_dir"] = job_dir.as_posix()
        summaries.append(summary)
    return sorted(summaries, key=lambda s: _natural_key(s["job_dir"]))


# ----------------------------------------------------------------------------- formatting


def format_float(value: float) -> str:
    """Compact float: 3 significant digits, short exponents (0.01, 0.00316, 1e-5, 1.23e4)."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")


def compact_override(entry: str) -> str:
    """``optimizer.lr=0.0031622776601683794`` -> ``optimizer.lr=0.00316``; other entries, and
    floats already written shorter (``1e-2``), as they are."""
    name, sep, value = str(entry).partition("=")
    if sep and _FLOAT_RE.fullmatch(value.strip()):
        short = format_float(float(value))
        if len(short) < len(value.strip()):
            return f"{name}={short}"
    return str(entry)


def operator_of(model: Any) -> str:
    """The conv operator family of a model name: ``standard``/``dilated`` -> standard conv,
    names starting with ``depthwise`` -> depthwise-separable conv, others by their name."""
    name = str(model) if model is not None else "?"
    if name in ("standard", "dilated"):
        return STANDARD_CONV
    if name.startswith("depthwise"):
        return SEPARABLE_CONV
    return name


# ----------------------------------------------------------------------------- aggregation


def _override_name(entry: str) -> str:
    return entry.split("=", 1)[0].lstrip("+~")


def config_key(summary: dict) -> tuple[str, ...]:
    """The job's overrides without ``seed=...``, sorted; or its model fields if it has none."""
    overrides = summary.get("overrides")
    if isinstance(overrides, list):
        return tuple(sorted(str(o) for o in overrides if _override_name(str(o)) != "seed"))
    if summary.get("model") is None:
        return (f"job={summary.get('job_dir')}",)
    fields = ("model", "kernel_size", "dilation", "channels", "padding")
    return tuple(f"{name}={summary.get(name)}" for name in fields)


def _is_label_field(entry: str) -> bool:
    name = _override_name(entry)
    return name == "model" or name.rsplit(".", 1)[-1] in ("kernel_size", "dilation")


def _finite(values: list[Any]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def _mean_std(values: list[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (ddof=1, None for fewer than two values) and count of the finite values."""
    finite = _finite(values)
    if not finite:
        return None, None, 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return float(np.mean(finite)), std, len(finite)


def _first(jobs: list[dict], field: str) -> Any:
    return next((job[field] for job in jobs if job.get(field) is not None), None)


def _status_text(jobs: list[dict]) -> str:
    counts = Counter(job.get("status") or "unknown" for job in jobs)
    if len(counts) == 1:
        return next(iter(counts))
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else 99, s))
    return ", ".join(f"{counts[status]} {status}" for status in order)


def _job_metric(job: dict, metric: str) -> Any:
    if metric == "train_us_per_sample":
        speed = job.get("train_samples_per_s")
        ok = isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0
        return 1e6 / speed if ok else None
    return job.get(metric)


def _aggregate_group(key: tuple[str, ...], jobs: list[dict], shared: set[str]) -> dict:
    completed = [job for job in jobs if job.get("status") == "completed"]
    settings = " ".join(
        compact_override(e) for e in key if e not in shared and not _is_label_field(e)
    )
    # `variant` names the operator a job really built (standard with dilation 2 is dilated).
    variant = _first(jobs, "variant") or _first(jobs, "model")
    model = _first(jobs, "model") or variant
    kernel, dilation = _first(jobs, "kernel_size"), _first(jobs, "dilation")
    label_parts = [str(variant) if variant is not None else "?"]
    label_parts += [f"k{kernel}"] if kernel is not None else []
    label_parts += [f"d{dilation}"] if dilation is not None else []
    config = {
        "label": " ".join(label_parts + ([settings] if settings else [])),
        "variant": variant,
        "model": model,
        "operator": operator_of(model),
        "settings": settings,
        "kernel_size": kernel,
        "dilation": dilation,
        "channels": _first(jobs, "channels"),
        "padding": _first(jobs, "padding"),
    }
    for field in SHAPE_FIELDS + RATIO_FIELDS:
        config[field] = _first(completed + jobs, field)
    for metric in METRICS + EXTRA_METRICS:
        stats = _mean_std([_job_metric(job, metric) for job in completed])
        config.update(zip((f"{metric}_mean", f"{metric}_std", f"{metric}_n"), stats, strict=True))
    reasons = [job.get("reason") for job in jobs if job.get("status") != "completed"]
    config.update(
        test_acc_values=_finite([job.get("test_acc") for job in completed]),
        n_jobs=len(jobs),
        n_completed=len(completed),
        seeds=[job.get("seed") for job in jobs],
        status=_status_text(jobs),
        reasons=list(dict.fromkeys(str(r) for r in reasons if r)),
        overrides=" ".join(key),
        job_dirs=[job.get("job_dir") for job in jobs],
        erf_files=[
            (job.get("job_dir"), job.get("erf_npy"), job.get("erf_png")) for job in completed
        ],
    )
    return config


def aggregate(summaries: list[dict]) -> list[dict]:
    """One dict per configuration (jobs differing only in seed), best mean test accuracy first.

    Configurations without any completed test accuracy come last. Keys: ``CSV_COLUMNS`` plus
    ``settings`` (the overrides that tell configurations with equal model, kernel and dilation
    apart) and ``erf_files``. ``welch_*_vs_best`` hold the test against the best configuration
    (see :func:`test_against_best`).
    """
    groups: dict[tuple[str, ...], list[dict]] = {}
    for summary in summaries:
        groups.setdefault(config_key(summary), []).append(summary)
    shared = set.intersection(*(set(key) for key in groups)) if groups else set()
    configs = [_aggregate_group(key, jobs, shared) for key, jobs in groups.items()]
    configs.sort(key=lambda c: (c["test_acc_mean"] is None, -(c["test_acc_mean"] or 0), c["label"]))
    label_counts = Counter(c["label"] for c in configs)
    seen: Counter[str] = Counter()
    for config in configs:  # keep labels unique even if two configurations look alike
        if label_counts[config["label"]] > 1:
            seen[config["label"]] += 1
            config["label"] += f" #{seen[config['label']]}"
    test_against_best(configs)
    return configs


# ----------------------------------------------------------------------------- statistics


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
    a, b = _finite(a), _finite(b)
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


def reference_config(configs: list[dict]) -> dict | None:
    """The configuration the others are tested against: the best (highest mean test
    accuracy) among those with at least two seeds, so that a one-seed best does not leave
    everything untestable."""
    ranked = [c for c in configs if c["test_acc_mean"] is not None]
    return next((c for c in ranked if len(c["test_acc_values"]) >= 2), None)


def test_against_best(configs: list[dict]) -> None:
    """Set ``welch_t_vs_best``, ``welch_df_vs_best`` and ``welch_p_vs_best`` (Welch's t-test
    against :func:`reference_config`, the best configuration with two or more seeds) and
    ``welch_reference`` (its label) on every other ranked configuration; None where it cannot
    be tested (n < 2)."""
    for config in configs:
        config.update(dict.fromkeys((*TEST_FIELDS, "welch_reference")))
    reference = reference_config(configs)
    if reference is None:
        return
    for other in configs:
        if other is reference or other["test_acc_mean"] is None:
            continue
        other["welch_reference"] = reference["label"]
        result = welch_t_test(reference["test_acc_values"], other["test_acc_values"])
        if result is not None:
            other.update(
                welch_t_vs_best=result.t, welch_df_vs_best=result.df, welch_p_vs_best=result.p
            )


test_against_best.__test__ = False  # not a pytest test, despite its name


def _p_text(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def compare_pair(a: dict, b: dict) -> tuple[str, str]:
    """('same' | 'untestable' | 'different', sentence): Welch's t-test of two configurations'
    test accuracies over seeds, at ``ALPHA`` two-sided."""
    diff = (a["test_acc_mean"] - b["test_acc_mean"]) * 100
    names = f"{a['label']} vs {b['label']}: {diff:+.2f} pp"
    result = welch_t_test(a["test_acc_values"], b["test_acc_values"])
    if result is None:
        n_a, n_b = len(a["test_acc_values"]), len(b["test_acc_values"])
        return "untestable", f"{names}; cannot be tested (n = {n_a} vs {n_b})"
    stats = (
        f"Welch t = {result.t:.2f}, df = {result.df:.1f}, {_p_text(result.p)} "
        f"(n = {result.n_a} vs {result.n_b})"
    )
    if result.p < ALPHA:
        return "different", f"{names}, {stats}: significant at p < {ALPHA:g}"
    return "same", f"{names}, {stats}: not significant at p < {ALPHA:g}"


def noise_notes(configs: list[dict]) -> list[str]:
    """Sentences: the test used, then each configuration tested against the best one."""
    ranked = [c for c in configs if c["test_acc_mean"] is not None]
    if len(ranked) < 2:
        return ["Fewer than two configurations have a test accuracy: nothing to compare."]
    best, reference = ranked[0], reference_config(configs)
    notes = [
        f"Test: {TEST_NAME} of each configuration's test accuracies over seeds (completed "
        f"jobs) against the best configuration's; a difference is significant when "
        f"p < {ALPHA:g}. It needs at least two seeds on both sides (n = 1: cannot be "
        "tested). Each comparison is tested on its own (no correction for multiple "
        f"comparisons: about {ALPHA:.0%} of true ties still come out significant), and with "
        "few seeds the test has little power: not significant is not the same as equal.",
        f"Best: {best['label']}, test acc {_acc_cell(best, 'test_acc')} %.",
    ]
    if reference is None:
        notes.append("No configuration has two or more seeds: nothing can be tested.")
        return notes
    if reference is not best:
        notes.append(
            f"The best has a single seed, so the reference for the test is the best "
            f"configuration with at least two seeds: {reference['label']}, test acc "
            f"{_acc_cell(reference, 'test_acc')} %."
        )
    verdicts: dict[str, list[str]] = {"same": [], "untestable": [], "different": []}
    for other in ranked:
        if other is reference:
            continue
        verdict, sentence = compare_pair(reference, other)
        verdicts[verdict].append(other["label"])
        notes.append(sentence + ".")
    ref = "the best" if reference is best else reference["label"]
    notes.append(
        f"Not significantly different from {ref} (p >= {ALPHA:g}): "
        + (", ".join(verdicts["same"]) or "none")
        + "."
    )
    if verdicts["untestable"]:
        notes.append("Cannot be tested (a single seed): " + ", ".join(verdicts["untestable"]) + ".")
    notes.append(
        f"Significantly behind {ref} (p < {ALPHA:g}): "
        + (", ".join(verdicts["different"]) or "none")
        + "."
    )
    return notes


# ----------------------------------------------------------------------------- Pareto fronts


@dataclass(frozen=True)
class CostAxis:
    name: str  # file suffix: acc_vs_<name>.png
    field: str  # config key of the value (lower is cheaper)
    std_field: str | None  # config key of its std over seeds
    label: str  # axis label
    counted: bool  # counted from the architecture (params, MACs) rather than measured
    log: bool


COST_AXES = (
    CostAxis("macs", "macs", None, "MACs per image", True, True),
    CostAxis("params", "params", None, "parameters", True, True),
    CostAxis(
        "train_time",
        "train_us_per_sample_mean",
        "train_us_per_sample_std",
        "training time per sample (µs, = 1e6 / train samples/s)",
        False,
        False,
    ),
    CostAxis(
        "inference",
        "inference_ms_per_image_mean",
        "inference_ms_per_image_std",
        "inference latency (ms per image, batched)",
        False,
        False,
    ),
)


def _cost(config: dict, axis: CostAxis) -> float | None:
    value = config.get(axis.field)
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def cost_axes(configs: list[dict]) -> list[CostAxis]:
    """The cost axes some ranked configuration has a value for."""
    ranked = [c for c in configs if c["test_acc_mean"] is not None]
    return [axis for axis in COST_AXES if any(_cost(c, axis) is not None for c in ranked)]


def pareto_front(configs: list[dict], axis: CostAxis) -> list[dict]:
    """The configurations no other beats on both mean test accuracy (higher is better) and
    ``axis`` (lower is better): no other is at least as good on both and better on one.
    Sorted by cost, cheapest first."""
    points = [
        (cost, c["test_acc_mean"], c)
        for c in configs
        if c["test_acc_mean"] is not None and (cost := _cost(c, axis)) is not None
    ]
    front = [
        (cost, acc, c)
        for cost, acc, c in points
        if not any(oc <= cost and oa >= acc and (oc < cost or oa > acc) for oc, oa, _ in points)
    ]
    return [c for _, _, c in sorted(front, key=lambda p: (p[0], p[1], p[2]["label"]))]


def pareto_notes(configs: list[dict]) -> list[str]:
    notes = []
    for axis in cost_axes(configs):
        front = pareto_front(configs, axis)
        items = ", ".join(
            f"{c['label']} ({_cost_text(_cost(c, axis), axis)}, {c['test_acc_mean'] * 100:.2f}%)"
            for c in front
        )
        notes.append(f"Pareto front on {axis.label.split(' (')[0]}: {items}.")
    return notes


def _cost_text(value: float | None, axis: CostAxis) -> str:
    if value is None:
        return "-"
    if axis.counted:
        return si(value) + (" MACs" if axis.name == "macs" else " params")
    unit = " µs/sample" if axis.name == "train_time" else " ms/image"
    return f"{value:.3g}{unit}"


# ----------------------------------------------------------------------------- rendering


def _acc_cell(config: dict, metric: str) -> str:
    mean, std, n = (config[f"{metric}_{stat}"] for stat in ("mean", "std", "n"))
    if mean is None:
        return "-"
    return f"{mean * 100:.2f} (n=1)" if n == 1 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def _p_cell(config: dict, reference: dict | None, configs: list[dict]) -> str:
    if config["test_acc_mean"] is None or reference is None:
        return "-"
    if config is reference:  # "ref" where the best has a single seed and cannot be it
        best = next(c for c in configs if c["test_acc_mean"] is not None)
        return "best" if config is best else "ref"
    p = config.get("welch_p_vs_best")
    if p is None:
        return "n=1"
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def _plain_cell(config: dict, metric: str) -> str:
    """Mean ± std with 3 significant digits in the mean and as many decimals in the std."""
    mean, std = config[f"{metric}_mean"], config[f"{metric}_std"]
    if mean is None:
        return "-"
    decimals = max(0, 2 - math.floor(math.log10(abs(mean)))) if mean else 0
    return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if std is not None else "")


def table(configs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the comparison table (accuracies in %)."""
    show_ratios = any(c[field] is not None for c in configs for field in RATIO_FIELDS)
    show_latency = any(c["inference_ms_per_image_mean"] is not None for c in configs)
    show_erf = any(c["erf_95_mean"] is not None for c in configs)
    reference = reference_config(configs)
    headers = ["variant", "kernel", "dilation", "params", "MACs", "receptive field"]
    headers += ["params vs standard conv", "MACs vs standard conv"] if show_ratios else []
    headers += ["best val acc (%)", "test acc (%)", "p vs best", "samples/s"]
    headers += ["inference ms/image"] if show_latency else []
    headers += ["ERF 95% (px)"] if show_erf else []
    headers += ["seeds", "status", "reason"]
    rows = []
    for c in configs:
        variant = str(c["variant"]) + (f" ({c['settings']})" if c["settings"] else "")
        kernel, dilation = (
            str(c[f]) if c[f] is not None else "-" for f in ("kernel_size", "dilation")
        )
        row = [
            variant,
            kernel,
            dilation,
            si(c["params"]),
            si(c["macs"]),
            si(c["receptive_field"]),
        ]
        if show_ratios:
            row += [f"{c[f]:.3g}x" if c[f] is not None else "-" for f in RATIO_FIELDS]
        speed = c["train_samples_per_s_mean"]
        n_acc = c["test_acc_n"]
        row += [_acc_cell(c, "best_val_acc"), _acc_cell(c, "test_acc")]
        row += [_p_cell(c, reference, configs)]
        row += [f"{speed:,.0f}" if speed is not None else "-"]
        row += [_plain_cell(c, "inference_ms_per_image")] if show_latency else []
        row += [_plain_cell(c, "erf_95")] if show_erf else []
        row += [str(n_acc) if n_acc == c["n_jobs"] else f"{n_acc}/{c['n_jobs']}"]
        row += [c["status"], "; ".join(c["reasons"])]
        rows.append(row)
    return headers, rows


def _failure_lines(summaries: list[dict]) -> list[str]:
    lines = []
    for s in summaries:
        if s.get("status") != "completed":
            overrides = s.get("overrides") or []
            shown = " ".join(compact_override(o) for o in overrides) or s.get("model") or "?"
            reason = s.get("reason") or "no reason given"
            lines.append(
                f"{s.get('job_dir', '?')}: {s.get('status') or 'unknown'} [{shown}]: {reason}"
            )
    return lines


ERF_NOTE = (
    "ERF 95%: side of the smallest centred square holding 95% of the ERF's mass. Holes in RF: "
    "share of the theoretical RF's pixels that get no gradient at all (gridding). An RF larger "
    "than the image is cut by the image border, and so is the ERF."
)


def erf_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the ERF table (one row per configuration with a saved ERF)."""
    headers = ["operator", "kernel", "dilation", "theoretical RF (px)", "ERF 95% (px)"]
    headers += ["ERF 95% / RF", "holes in RF", "seeds"]
    cells = []
    for row in rows:
        stats, rf, erf = row["stats"] or {}, row["rf"], row["erf"]
        ratio, holes, erf_95 = (stats.get(k) for k in ("erf_95_over_rf", "rf_holes", "erf_95"))
        rf_text = str(rf) if rf else "-"
        if rf and erf is not None and rf > max(erf.shape):
            rf_text += " (> image)"
        cells.append(
            [
                row["operator"],
                str(row["kernel"]) if row["kernel"] is not None else "-",
                str(row["dilation"]) if row["dilation"] is not None else "-",
                rf_text,
                str(erf_95) if erf_95 is not None else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
                f"{holes:.0%}" if holes is not None else "-",
                str(row["n"]),
            ]
        )
    return headers, cells


def render_text(
    source: Path, summaries: list[dict], configs: list[dict], erf_rows: list[dict] | None = None
) -> str:
    headers, rows = table(configs)
    lines = [
        f"{len(summaries)} jobs in {len(configs)} configurations from {source}",
        f"Accuracies in %, mean ± std over seeds; {STD_NOTE}; "
        f"p vs best: {TEST_NAME} against the best configuration with two or more seeds, "
        f"significant when p < {ALPHA:g}.",
        "",
    ]
    lines += text_table(headers, rows)
    lines += ["", "Test against the best (test accuracy):"]
    lines += [f"  {n}" for n in noise_notes(configs)]
    fronts = pareto_notes(configs)
    if fronts:
        lines += ["", "Accuracy for its cost (mean test accuracy; lower cost is better):"]
        lines += [f"  {n}" for n in fronts]
    if erf_rows:
        headers, cells = erf_table(erf_rows)
        lines += ["", "Effective receptive field:"]
        lines += text_table(headers, cells, rule=False, indent="  ")
        lines += [f"  {ERF_NOTE}"]
    failures = _failure_lines(summaries)
    lines += ["", f"Failures ({len(failures)}):", *(f"  {f}" for f in failures or ["none"])]
    return "\n".join(lines)


PLOT_TEXT = {
    "acc_vs_cost.png": (
        "Accuracy for its cost, one panel per cost. Each point is a configuration (mean over "
        "seeds, error bar = sample std where n > 1), coloured by conv operator, marked by "
        "dilation and labelled kernel/dilation. Black rings and the dashed staircase: the "
        "Pareto front (no other configuration is both at least as accurate and at least as "
        "cheap). Points with equal cost (dilation leaves params and MACs unchanged) are spread "
        "slightly sideways, dilation ascending from left to right."
    ),
    "heatmap.png": (
        "Mean test accuracy (%) per kernel size (rows) and dilation (columns), one panel per "
        "conv operator, one colour scale for all panels; each cell shows mean, ± std and n."
    ),
    "erf.png": (
        "Effective receptive fields (Luo et al. 2016): |d centre unit / d input| averaged over "
        "test images (and seeds), each normalised to a maximum of 1, one colour scale. The "
        "dashed square is the theoretical receptive field; black pixels inside it get no "
        "gradient at all (gridding of dilated convs)."
    ),
}


def render_markdown(
    source: Path,
    summaries: list[dict],
    configs: list[dict],
    plots: list[Path] | None = None,
    erf_rows: list[dict] | None = None,
) -> str:
    headers, rows = table(configs)
    plot_names = {p.name for p in plots or []}

    def md_row(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    failures = _failure_lines(summaries)
    lines = [
        "# Convolution variant comparison",
        "",
        f"{len(summaries)} jobs in {len(configs)} configurations from `{source}`.",
        f"Accuracies in %, mean ± std over seeds; {STD_NOTE}. `p vs best`: {TEST_NAME} "
        f"against the best configuration with two or more seeds, significant when "
        f"p < {ALPHA:g}.",
        "",
        md_row(headers),
        md_row(["---"] * len(headers)),
        *(md_row(row) for row in rows),
        "",
        "## Test against the best (test accuracy)",
        "",
        *(f"- {note}" for note in noise_notes(configs)),
        "",
    ]
    fronts = pareto_notes(configs)
    if fronts or plot_names:
        lines += ["## Accuracy for its cost", ""]
        lines += [f"- {note}" for note in fronts]
        for name in ("acc_vs_cost.png", "heatmap.png"):
            if name in plot_names:
                lines += ["", PLOT_TEXT[name], "", f"![{name}]({name})"]
        lines += [""]
    if erf_rows:
        lines += ["## Effective receptive field", ""]
        if "erf.png" in plot_names:
            lines += [PLOT_TEXT["erf.png"], "", "![erf.png](erf.png)", ""]
        erf_headers, erf_cells = erf_table(erf_rows)
        lines += [md_row(erf_headers), md_row(["---"] * len(erf_headers))]
        lines += [md_row(row) for row in erf_cells]
        lines += ["", ERF_NOTE, ""]
    lines += [
        f"## Failures ({len(failures)})",
        "",
        *(f"- {line}" for line in failures or ["none"]),
    ]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    return "" if value is None else json.dumps(value) if isinstance(value, list) else value


def write_csv(configs: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for config in configs:
            writer.writerow({key: _csv_value(value) for key, value in config.items()})


# ----------------------------------------------------------------------------- plots


def _new_figure(size: tuple[float, float]) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot state), constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _operators(configs: list[dict]) -> list[str]:
    names = list(dict.fromkeys(c["operator"] for c in configs))
    order = {STANDARD_CONV: 0, SEPARABLE_CONV: 1}
    return sorted(names, key=lambda n: (order.get(n, 2), names.index(n)))


def _dodged(points: list[dict], xs: list[float], axis: CostAxis) -> list[float]:
    """x positions with points of equal cost spread sideways, deterministically: ordered by
    dilation, then label; 1.2% of the x span (in decades on a log axis) apart."""
    if not xs:
        return []
    tx = [math.log10(x) for x in xs] if axis.log else list(xs)
    span = max(max(tx) - min(tx), 0.3 if axis.log else 0.05 * max(abs(v) for v in tx) or 1.0)
    step = 0.012 * span
    out = list(tx)
    groups: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(x, []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: (points[i]["dilation"] or 0, points[i]["label"]))
        for rank, i in enumerate(members):
            out[i] = tx[i] + (rank - (len(members) - 1) / 2) * step
    return [10**v for v in out] if axis.log else out


def _point_label(config: dict) -> str:
    parts = []
    if config["kernel_size"] is not None:
        parts.append(f"k{config['kernel_size']}")
    if config["dilation"] is not None:
        parts.append(f"d{config['dilation']}")
    if not parts or config["operator"] not in (STANDARD_CONV, SEPARABLE_CONV):
        parts.insert(0, str(config["model"]))
    if config["settings"]:
        parts.append(config["settings"])
    return " ".join(parts)


Segment = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class _Labels:
    """Point labels of one axes, placed once the figure's layout is final."""

    ax: Any
    anchors: list[tuple[float, float]]  # the points, data coordinates
    texts: list[Any]
    radii: list[float]  # points: how far each point's marker (or ring) reaches
    segments: list[Segment]  # error bars and the Pareto staircase, data coordinates


def _place_labels(fig: Any, job: _Labels) -> None:
    """Move each label (first tried right of its point) to the nearest free spot: right or
    left of the point, stepping up and down by most of a label height; free means clear of
    other labels, markers, error bars and the front's staircase, and inside the axes. A grey
    leader line joins labels that moved away. Deterministic; works in display pixels."""
    ax = job.ax
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    from_px = ax.transData.inverted().transform
    axes_box = ax.get_window_extent(renderer)
    dpi_scale = fig.dpi / 72  # radii are in points
    obstacles = [
        (x - r * dpi_scale, y - r * dpi_scale, x + r * dpi_scale, y + r * dpi_scale)
        for (x, y), r in zip((to_px(a) for a in job.anchors), job.radii, strict=True)
    ]
    for start, end in job.segments:
        (x0, y0), (x1, y1) = to_px(start), to_px(end)
        obstacles.append(
            (min(x0, x1) - 1.5, min(y0, y1) - 1.5, max(x0, x1) + 1.5, max(y0, y1) + 1.5)
        )
    placed: list[tuple[float, float, float, float]] = []

    def free(rect: tuple[float, float, float, float]) -> bool:
        inside = (
            rect[0] >= axes_box.x0
            and rect[2] <= axes_box.x1
            and rect[1] >= axes_box.y0
            and rect[3] <= axes_box.y1
        )
        return inside and not any(
            rect[0] < o[2] and rect[2] > o[0] and rect[1] < o[3] and rect[3] > o[1]
            for o in placed + obstacles
        )

    anchors_px = [to_px(a) for a in job.anchors]
    order = sorted(range(len(job.texts)), key=lambda i: (-anchors_px[i][1], anchors_px[i][0]))
    for i in order:
        text = job.texts[i]
        px, py = anchors_px[i]
        gap = job.radii[i] * dpi_scale + 2
        box = text.get_window_extent(renderer)
        w, h = box.width + 2, box.height + 1
        best = None
        for step in range(0, 21):
            dy = (step + 1) // 2 * h * 0.8 * (1 if step % 2 else -1)
            for side in (1, -1):
                x0 = px + gap if side > 0 else px - gap - w
                rect = (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)
                if free(rect):
                    best = (rect, side, dy)
                    break
            if best:
                break
        if best is None:  # crowded: keep it right of the point
            best = ((px + gap, py - h / 2, px + gap + w, py + h / 2), 1, 0.0)
        rect, side, dy = best
        placed.append(rect)
        edge = rect[0] if side > 0 else rect[2]
        text.set_position(from_px((edge, (rect[1] + rect[3]) / 2)))
        text.set_horizontalalignment("left" if side > 0 else "right")
        if abs(dy) > 0.5 * h:
            ax.plot(
                *zip(from_px((px, py)), from_px((edge, (rect[1] + rect[3]) / 2)), strict=True),
                color="0.6",
                linewidth=0.5,
                zorder=1,
            )


def _si_log_formatter() -> Any:
    """Log-axis tick labels as 2M, 30k: matplotlib's choice of which ticks to label."""
    from matplotlib.ticker import LogFormatter

    class SILogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return si(x) if super().__call__(x, pos) else ""

    return SILogFormatter(labelOnlyBase=False)


def _draw_cost_panel(
    fig: Any, ax: Any, configs: list[dict], axis: CostAxis, styles: dict, fontsize: float
) -> None:
    points = [c for c in configs if c["test_acc_mean"] is not None and _cost(c, axis)]
    xs = _dodged(points, [_cost(c, axis) for c in points], axis)
    front = pareto_front(configs, axis)
    segments: list[Segment] = []
    for config, x in zip(points, xs, strict=True):
        color, marker = styles["color"][config["operator"]], styles["marker"][config["dilation"]]
        y, yerr = config["test_acc_mean"] * 100, (config["test_acc_std"] or 0) * 100
        xerr = (config.get(axis.std_field) or 0) if axis.std_field else 0
        ax.errorbar(
            [x],
            [y],
            yerr=[yerr] if yerr else None,
            xerr=[xerr] if xerr else None,
            marker=marker,
            color=color,
            markersize=6,
            linestyle="none",
            capsize=2,
            elinewidth=0.8,
            zorder=3,
        )
        segments += [((x, y - yerr), (x, y + yerr))] if yerr else []
        segments += [((x - xerr, y), (x + xerr, y))] if xerr else []
    front_xy = [(xs[points.index(c)], c["test_acc_mean"] * 100) for c in front]
    if front_xy:
        fx, fy = zip(*front_xy, strict=True)
        ax.step(fx, fy, where="post", color="0.25", linestyle="--", linewidth=0.9, zorder=2)
        ax.plot(
            fx,
            fy,
            linestyle="none",
            marker="o",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=1.0,
            zorder=4,
        )
        for (x0, y0), (x1, y1) in zip(front_xy, front_xy[1:], strict=False):
            segments += [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1))]
    if axis.log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_si_log_formatter())
        ax.xaxis.set_minor_formatter(_si_log_formatter())
    ax.margins(x=0.12, y=0.12)
    ax.grid(True, which="both", alpha=0.25)
    note = "\n(equal costs spread sideways by dilation, d ascending left to right)"
    ax.set_xlabel(
        axis.label + (" (log scale)" if axis.log else "") + (note if axis.counted else ""),
        fontsize=fontsize + 1,
    )
    ax.set_ylabel("test accuracy (%)", fontsize=fontsize + 1)
    ax.set_title(f"Test accuracy vs {axis.label.split(' (')[0]}", fontsize=fontsize + 2)
    ax.tick_params(which="both", labelsize=fontsize)
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    texts = [
        ax.text(
            x,
            c["test_acc_mean"] * 100,
            _point_label(c),
            fontsize=fontsize,
            va="center",
            color=styles["color"][c["operator"]],
            zorder=5,
        )
        for c, x in zip(points, xs, strict=True)
    ]
    anchors = [(x, c["test_acc_mean"] * 100) for c, x in zip(points, xs, strict=True)]
    radii = [7.0 if c in front else 3.5 for c in points]  # the ring, or the marker
    styles.setdefault("pending", []).append(_Labels(ax, anchors, texts, radii, segments))


def _legend_handles(styles: dict) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=color, marker="o", linestyle="none", label=operator)
        for operator, color in styles["color"].items()
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.4",
            marker=marker,
            linestyle="none",
            label=f"dilation {d}" if d is not None else "no dilation (other model)",
        )
        for d, marker in styles["marker"].items()
    ]
    handles.append(
        Line2D(
            [],
            [],
            color="0.25",
            linestyle="--",
            marker="o",
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="black",
            label="Pareto front",
        )
    )
    return handles


def _cost_styles(configs: list[dict]) -> dict:
    dilations = sorted({c["dilation"] for c in configs}, key=lambda d: (d is None, d or 0))
    return {
        "color": {op: f"C{i % 10}" for i, op in enumerate(_operators(configs))},
        "marker": {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(dilations)},
    }


def _finish_labels(fig: Any, styles: dict) -> None:
    jobs = styles.pop("pending", [])
    if jobs:
        fig.draw_without_rendering()  # finalise the constrained layout before measuring
    for job in jobs:
        _place_labels(fig, job)


def plot_costs(configs: list[dict], out_dir: Path) -> list[Path]:
    """``acc_vs_cost.png`` (all cost panels) and ``acc_vs_<cost>.png`` (one each)."""
    axes = cost_axes(configs)
    if not axes:
        return []
    ranked = [c for c in configs if c["test_acc_mean"] is not None]
    styles = _cost_styles(ranked)
    written = []
    ncols = 2 if len(axes) > 1 else 1
    nrows = math.ceil(len(axes) / ncols)
    fig = _new_figure((7.5 * ncols, 5.6 * nrows + 0.9))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax, axis in zip(grid.flat, axes, strict=False):
        _draw_cost_panel(fig, ax, configs, axis, styles, fontsize=7)
    for ax in list(grid.flat)[len(axes) :]:
        ax.set_visible(False)
    fig.legend(
        handles=_legend_handles(styles),
        loc="outside lower center",
        ncols=min(6, len(_legend_handles(styles))),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        "Accuracy for its cost (mean ± std over seeds; black rings: Pareto front)", fontsize=11
    )
    _finish_labels(fig, styles)
    written.append(out_dir / "acc_vs_cost.png")
    fig.savefig(written[-1], dpi=110)
    for axis in axes:
        fig = _new_figure((8.5, 6.4))
        _draw_cost_panel(fig, fig.add_subplot(), configs, axis, styles, fontsize=7.5)
        fig.legend(
            handles=_legend_handles(styles), loc="outside right center", fontsize=8, frameon=False
        )
        _finish_labels(fig, styles)
        written.append(out_dir / f"acc_vs_{axis.name}.png")
        fig.savefig(written[-1], dpi=120)
    return written


def heatmap_data(configs: list[dict]) -> tuple[list[str], list[int], list[int], dict]:
    """Operators, kernel sizes (rows), dilations (columns: every dilation of the sweep, for
    every operator) and, per operator, {(row, column): [configurations]} for the heatmap."""
    cells = [c for c in configs if None not in (c["kernel_size"], c["dilation"])]
    operators = _operators(cells)
    kernels = sorted({c["kernel_size"] for c in cells})
    dilations = sorted({c["dilation"] for c in cells})
    grids: dict[str, dict[tuple[int, int], list[dict]]] = {op: {} for op in operators}
    for c in cells:
        key = (kernels.index(c["kernel_size"]), dilations.index(c["dilation"]))
        grids[c["operator"]].setdefault(key, []).append(c)
    return operators, kernels, dilations, grids


def plot_heatmap(configs: list[dict], out_dir: Path) -> Path | None:
    """``heatmap.png``: kernel x dilation per operator, one shared colour scale."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    operators, kernels, dilations, grids = heatmap_data(configs)
    if not operators:
        return None
    cells = [c for grid in grids.values() for group in grid.values() for c in group]
    values = [c["test_acc_mean"] * 100 for c in cells if c["test_acc_mean"] is not None]
    norm = Normalize(min(values), max(values)) if values else Normalize(0, 100)
    if values and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 0.05, norm.vmax + 0.05)
    cmap = colormaps["viridis"].with_extremes(bad="0.88")
    ncols = min(len(operators), 3)
    nrows = math.ceil(len(operators) / ncols)
    width = ncols * (0.95 * len(dilations) + 1.0) + 1.3
    fig = _new_figure((max(width, 5.0), nrows * (0.8 * len(kernels) + 1.1) + 0.7))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, op in zip(axes.flat, operators, strict=False):
        data = np.full((len(kernels), len(dilations)), np.nan)
        for (i, j), group in grids[op].items():
            done = [c for c in group if c["test_acc_mean"] is not None]
            if done:
                data[i, j] = max(c["test_acc_mean"] for c in done) * 100
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        for (i, j), value in np.ndenumerate(data):
            group = grids[op].get((i, j), [])
            if math.isfinite(value):
                best = max(
                    (c for c in group if c["test_acc_mean"] is not None),
                    key=lambda c: c["test_acc_mean"],
                )
                r, g, b, _ = cmap(norm(value))
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                std = best["test_acc_std"]
                detail = f"±{std * 100:.2f} " if std is not None else ""
                detail += f"n={best['test_acc_n']}"
                detail += f"\nbest of {len(group)}" if len(group) > 1 else ""
                ax.text(
                    j,
                    i - 0.1,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=10,
                    fontweight="bold",
                )
                ax.text(
                    j,
                    i + 0.12,
                    detail,
                    ha="center",
                    va="top",
                    color=color,
                    fontsize=7.5,
                    linespacing=1.1,
                )
            elif group:
                ax.text(j, i, "failed", ha="center", va="center", color="0.3", fontsize=8)
            else:
                ax.text(j, i, "not run", ha="center", va="center", color="0.5", fontsize=7)
        ax.set_xticks(range(len(dilations)), [str(d) for d in dilations])
        ax.set_yticks(range(len(kernels)), [str(k) for k in kernels])
        ax.set_xlabel("dilation", fontsize=9)
        ax.set_ylabel("kernel size", fontsize=9)
        ax.set_title(op, fontsize=10)
    for ax in list(axes.flat)[len(operators) :]:
        ax.set_visible(False)
    if values:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
        bar.set_label("mean test accuracy (%)", fontsize=9)
        bar.ax.yaxis.set_major_formatter("{x:.2f}")
    fig.suptitle(
        "Mean test accuracy (%) over seeds: one colour scale for all operators", fontsize=10
    )
    path = out_dir / "heatmap.png"
    fig.savefig(path, dpi=120)
    return path


def erf_rows(configs: list[dict], root: Path | None) -> list[dict]:
    """Per configuration with a saved ERF: the mean ERF over seeds (from ``erf_npy``), or the
    PNG paths (``erf_png``) of jobs that saved only an image, with its statistics."""
    if root is None:
        return []

    rows = []
    for c in configs:
        arrays, pngs = [], []
        for job_dir, npy, png in c.get("erf_files", []):
            base = root / str(job_dir)
            if npy and (base / npy).is_file():
                try:
                    array = np.load(base / npy)
                except (OSError, ValueError):
                    array = None
                if array is not None and array.ndim == 2 and np.isfinite(array).all():
                    arrays.append(array.astype(np.float64))
                    continue
            if png and (base / png).is_file():
                pngs.append(base / png)
        if not arrays and not pngs:
            continue
        erf, stats = None, None
        shapes = {a.shape for a in arrays}
        if arrays and len(shapes) == 1:
            erf = np.mean(arrays, axis=0)
            erf = erf / erf.max() if erf.max() > 0 else erf
            stats = erf_stats(erf, c["receptive_field"])
        elif c["erf_95_mean"] is not None:
            stats = {"erf_95": round(c["erf_95_mean"], 1)}
        rows.append(
            {
                "config": c,
                "operator": c["operator"],
                "kernel": c["kernel_size"],
                "dilation": c["dilation"],
                "rf": c["receptive_field"],
                "erf": erf,
                "png": pngs[0] if erf is None and pngs else None,
                "stats": stats,
                "n": len(arrays) if erf is not None else len(pngs),
            }
        )
    order = {op: i for i, op in enumerate(_operators([r["config"] for r in rows]))}
    rows.sort(
        key=lambda r: (
            order[r["operator"]],
            r["kernel"] or 0,
            r["dilation"] or 0,
            r["config"]["label"],
        )
    )
    return rows


def plot_erf_grid(rows: list[dict], out_dir: Path) -> Path | None:
    """``erf.png``: rows = operator x kernel, columns = dilation; ERF arrays on one colour
    scale with the theoretical RF (dashed); saved PNGs where a job left no array."""
    if not rows:
        return None
    from matplotlib.image import imread


    row_keys = list(dict.fromkeys((r["operator"], r["kernel"]) for r in rows))
    col_keys = sorted({r["dilation"] for r in rows}, key=lambda d: (d is None, d or 0))
    fig = _new_figure((1.9 * len(col_keys) + 1.6, 2.0 * len(row_keys) + 0.9))
    axes = fig.subplots(len(row_keys), len(col_keys), squeeze=False)
    image = None
    cells = {}
    for r in rows:  # several configurations per cell (other settings): the best one
        cells.setdefault((r["operator"], r["kernel"], r["dilation"]), r)
    for i, (op, kernel) in enumerate(row_keys):
        for j, dilation in enumerate(col_keys):
            ax = axes[i, j]
            row = cells.get((op, kernel, dilation))
            if row is None:
                ax.set_axis_off()
                continue
            if row["erf"] is not None:
                image = draw_erf(ax, row["erf"], row["rf"])
            else:
                ax.imshow(imread(row["png"]))
                ax.set_xticks([])
                ax.set_yticks([])
            stats = row["stats"] or {}
            rf_text = f"RF {row['rf']} px" if row["rf"] else "RF ?"
            if row["erf"] is not None and row["rf"] and row["rf"] > max(row["erf"].shape):
                rf_text += " > image"
            bits = [rf_text]
            if stats.get("erf_95") is not None:
                bits.append(f"ERF95 {stats['erf_95']} px")
            if stats.get("rf_holes"):
                bits.append(f"holes {stats['rf_holes']:.0%}")
            ax.set_title(
                f"k{kernel} d{dilation}" if kernel is not None else str(row["config"]["model"]),
                fontsize=8,
                pad=2,
            )
            ax.set_xlabel(", ".join(bits), fontsize=7, labelpad=2)
            if j == 0 or all(cells.get((op, kernel, d)) is None for d in col_keys[:j]):
                ax.set_ylabel(f"{op}\nkernel {kernel}" if kernel is not None else op, fontsize=8)
    if image is not None:
        bar = fig.colorbar(
            image, ax=axes.ravel().tolist(), shrink=min(0.6, 2.5 / len(row_keys)), aspect=15
        )
        bar.set_label("ERF (normalised |gradient|)", fontsize=8)
    fig.suptitle("Effective receptive field (dashed: theoretical RF)", fontsize=10)
    path = out_dir / "erf.png"
    fig.savefig(path, dpi=110)
    return path


def write_plots(
    configs: list[dict], out_dir: Path, root: Path | None = None, erfs: list[dict] | None = None
) -> list[Path]:
    """Accuracy-for-its-cost panels, the shared-scale heatmap, and the ERF grid: from ``erfs``
    (:func:`erf_rows`) or else from ``root``, the multirun dir that the jobs' ``erf_npy`` and
    ``erf_png`` paths are relative to."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: skipping plots", file=sys.stderr)
        return []
    written = plot_costs(configs, out_dir)
    heatmap = plot_heatmap(configs, out_dir)
    erf = plot_erf_grid(erfs if erfs is not None else erf_rows(configs, root), out_dir)
    return written + [p for p in (heatmap, erf) if p is not None]


# ----------------------------------------------------------------------------- W&B


def _typed(value: str) -> Any:
    if value == "":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def log_report_to_wandb(
    report_dir: str | Path,
    *,
    project: str = "convexp",
    entity: str | None = None,
    group: str | None = None,
    mode: str = "auto",
    name: str = "report",
    dir: str | Path | None = None,  # noqa: A002 - wandb.init's name
) -> str:
    """Log a written report to one W&B run (``job_type="report"``) in ``group``: the
    configurations as a ``wandb.Table`` ("comparison"), every PNG as a ``wandb.Image`` (keyed by
    file name without ``.png``), and the best configuration in the run summary. The run is
    finished also when logging fails (exit code 1, the error is raised again). ``mode``:
    auto | online | offline | disabled (auto: WANDB_MODE, else online with credentials).
    The run's files go under ``dir`` (default: ``report_dir``). Returns the run id."""
    import wandb

    from convexp.loggers import resolve_mode

    report_dir = Path(report_dir)
    csv_path = report_dir / "comparison.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"no comparison.csv in {report_dir}: write the report first")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [[_typed(row[c]) for c in columns] for row in reader]
    pngs = sorted(report_dir.glob("*.png"))
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        job_type="report",
        name=name,
        dir=str(dir or report_dir),
        mode=resolve_mode(mode),
        reinit="finish_previous",
        config={"report_dir": str(report_dir.resolve()), "n_configurations": len(rows)},
        settings=wandb.Settings(init_timeout=30, silent=True),
    )
    exit_code = 1
    try:
        payload: dict[str, Any] = {"comparison": wandb.Table(columns=columns, data=rows)}
        for png in pngs:
            payload[png.stem] = wandb.Image(str(png), caption=PLOT_TEXT.get(png.name))
        run.log(payload)
        ranked = [dict(zip(columns, row, strict=True)) for row in rows]
        ranked = [r for r in ranked if r.get("test_acc_mean") is not None]
        if ranked:
            run.summary.update(
                {
                    "best_label": ranked[0]["label"],
                    "best_test_acc_mean": ranked[0]["test_acc_mean"],
                    "n_configurations": len(rows),
                }
            )
        exit_code = 0
        return run.id
    finally:
        run.finish(exit_code=exit_code)


# ----------------------------------------------------------------------------- CLI


def write_report(multirun_dir: Path, out_dir: Path | None = None, *, plots: bool = True,
                 summaries: list[dict] | None = None) -> tuple[Path, str]:
    """Write ``report/`` (CSV, Markdown, PNG plots) for a multirun dir; returns the report dir
    and the text table with the list of files written."""
    summaries = load_summaries(multirun_dir) if summaries is None else summaries
    configs = aggregate(summaries)
    erfs = erf_rows(configs, multirun_dir)
    text = render_text(multirun_dir, summaries, configs, erfs)
    out_dir = out_dir or multirun_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(configs, out_dir / "comparison.csv")
    pngs = write_plots(configs, out_dir, erfs=erfs) if plots else []
    markdown = render_markdown(multirun_dir, summaries, configs, pngs, erfs)
    (out_dir / "comparison.md").write_text(markdown)
    written = ["comparison.csv", "comparison.md", *(p.name for p in pngs)]
    return out_dir, f"{text}\nReport written to {out_dir}: {', '.join(written)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convexp-compare",
        description="Compare the jobs of a Hydra multirun (seeds pooled per configuration).",
    )
    parser.add_argument("multirun_dir", type=Path, help="multirun directory with job dirs")
    parser.add_argument("--out", type=Path, help="report dir (default: <multirun_dir>/report)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and plots to one W&B run (job_type=report)",
    )
    parser.add_argument("--project", default="convexp", help="W&B project (default: convexp)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument(
        "--group",
        default=None,
        help="W&B group, e.g. the sweep's (default: the multirun dir's name)",
    )
    parser.add_argument(
        "--wandb-mode",
        default="auto",
        choices=("auto", "online", "offline", "disabled"),
        help="auto: WANDB_MODE, else online with credentials, offline without",
    )
    args = parser.parse_args(argv)

    if not args.multirun_dir.is_dir():
        print(
            f"convexp-compare: {args.multirun_dir} does not exist or is not a directory",
            file=sys.stderr,
        )
        return 2
    summaries = load_summaries(args.multirun_dir)
    if not summaries:
        print(f"convexp-compare: no summary.json files under {args.multirun_dir}", file=sys.stderr)
        return 2

    out_dir, text = write_report(args.multirun_dir, args.out, plots=not args.no_plots,
                                 summaries=summaries)
    print(text)
    if args.wandb:
        group = args.group or args.multirun_dir.resolve().name
        try:
            run_id = log_report_to_wandb(
                out_dir, project=args.project, entity=args.entity, group=group, mode=args.wandb_mode
            )
        except Exception as err:  # noqa: BLE001 - the local report is written; say why W&B failed
            print(
                f"convexp-compare: W&B logging failed ({type(err).__name__}: {err}); "
                f"the local report in {out_dir} is complete",
                file=sys.stderr,
            )
            return 1
        print(f"Report logged to W&B: project {args.project}, group {group}, run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
