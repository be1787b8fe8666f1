"""A sweep's jobs as configurations: the summaries (loaded by :mod:`convexp.record`) grouped
into configurations that differ only in their seed, with their means over seeds, ranked by the
sweep's objective, and their effective receptive fields. numpy only."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from convexp import record
from convexp.erf_maps import erf_stats
from convexp.naming import config_label
from convexp.record import load_summaries  # noqa: F401 - the report's loader is record's
from convexp.report.stats import finite, mean_std, test_against_best
from convexp.variants import (
    SEPARABLE_CONV,
    STANDARD_CONV,
    dilation_key,
    dilation_sort_key,
    dilation_text,
    operator_of,
)

METRICS = ("test_acc", "best_val_acc", "final_val_acc", "train_samples_per_s")
# Measured per job (train_ms_per_sample is derived: 1000 / train_samples_per_s; the CSV keeps
# the earlier train_us_per_sample too); objective: the sweep's objective, see objective_of.
EXTRA_METRICS = ("train_us_per_sample", "inference_ms_per_image", "erf_95")
NEW_METRICS = ("objective", "train_ms_per_sample")
SHAPE_FIELDS = ("params", "macs", "receptive_field")
RATIO_FIELDS = ("param_ratio_vs_standard", "macs_ratio_vs_standard")
OBJECTIVE_TEXT = {"best_val_acc": "best val acc", "final_val_acc": "final val acc",
                  "test_acc": "test acc"}
SHORT_OPERATOR = {STANDARD_CONV: "std", SEPARABLE_CONV: "dw-sep"}


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


def objective_text(configs: list[dict]) -> str:
    """``best val acc``: the sweep's objective, as the report's text names it."""
    name = configs[0]["objective"] if configs else record.DEFAULT_OBJECTIVE
    return OBJECTIVE_TEXT.get(name, name)


# ----------------------------------------------------------------------------- aggregation


def _override_name(entry: str) -> str:
    return entry.split("=", 1)[0].lstrip("+~")


def config_key(summary: dict) -> tuple[str, ...]:
    """The job's overrides without ``seed=...``, sorted; or its model fields if it has none."""
    overrides = summary.get(record.OVERRIDES)
    if isinstance(overrides, list):
        return tuple(sorted(str(o) for o in overrides if _override_name(str(o)) != record.SEED))
    if summary.get("model") is None:
        return (f"job={summary.get(record.JOB_DIR)}",)
    fields = ("model", "kernel_size", "dilation", "channels", "padding")
    return tuple(f"{name}={summary.get(name)}" for name in fields)


def repeated_runs(summaries: list[dict]) -> list[tuple[str, str]]:
    """The job dirs of completed jobs that repeat an earlier one's configuration (recipe and
    model included) and seed (a sweep dir given twice, or next to a copy of itself): pooled,
    the same run would count as two seeds and shrink the spread. Pairs of (first job dir,
    repeat's job dir)."""
    pairs = []
    for _, _, jobs in configurations(summaries):
        first: dict[str, str] = {}
        for job in jobs:
            if job.get(record.STATUS) != record.COMPLETED or job.get(record.SEED) is None:
                continue
            seed, job_dir = str(job[record.SEED]), str(job.get(record.JOB_DIR))
            if seed in first:
                pairs.append((first[seed], job_dir))
            else:
                first[seed] = job_dir
    return pairs


def _is_label_field(entry: str) -> bool:
    name = _override_name(entry)
    return name == "model" or name.rsplit(".", 1)[-1] in ("kernel_size", "dilation")


def _first(jobs: list[dict], field: str) -> Any:
    return next((job[field] for job in jobs if job.get(field) is not None), None)


def _status_text(jobs: list[dict]) -> str:
    counts = Counter(job.get(record.STATUS) or "unknown" for job in jobs)
    if len(counts) == 1:
        return next(iter(counts))
    order = record.STATUS_ORDER
    keys = sorted(counts, key=lambda s: (order.index(s) if s in order else 99, s))
    return ", ".join(f"{counts[status]} {status}" for status in keys)


def _job_metric(job: dict, metric: str, objective: str) -> Any:
    if metric in ("train_us_per_sample", "train_ms_per_sample"):
        speed = job.get(record.TRAIN_SAMPLES_PER_S)
        ok = isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0
        return (1e6 if metric == "train_us_per_sample" else 1e3) / speed if ok else None
    if metric == "objective":
        return record.objective_value(job, objective)
    return job.get(metric)


# Beyond its overrides, what the seeds of one configuration share: the recipe (the config,
# convexp.record.RECIPE), and the model it built (another version of convexp can build another
# net from the same config).
IDENTITY_FIELDS = (record.RECIPE, "params", "macs")


def _apart_text(job: dict, fields: list[str]) -> str:
    """What tells a configuration's jobs apart from its namesakes: ``recipe 3f2a...``,
    ``5,000 params``, ``250,000 MACs``."""
    parts = []
    for field in fields:
        if job.get(field) is None:
            parts.append(f"no {field}")
        elif field == record.RECIPE:
            parts.append(f"recipe {job[field]}")
        else:
            parts.append(f"{job[field]:,} {'MACs' if field == 'macs' else field}")
    return " ".join(parts)


def configurations(summaries: list[dict]) -> list[tuple[tuple[str, ...], str | None, list[dict]]]:
    """The jobs grouped into configurations, ``(config_key, apart, jobs)``: equal overrides but
    seed, split where they differ in a field of :data:`IDENTITY_FIELDS` (their recipe, or the
    params and MACs of the model they built). ``apart`` says what tells a split part apart
    (None where the jobs agree). A job that recorded no such field (an older summary without a
    recipe, a job that failed before its model was built) agrees with any value of it."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for summary in summaries:
        groups.setdefault(config_key(summary), []).append(summary)
    parts = []
    for key, jobs in groups.items():
        differing = [f for f in IDENTITY_FIELDS
                     if len({j[f] for j in jobs if j.get(f) is not None}) > 1]
        if not differing:
            parts.append((key, None, jobs))
            continue
        split: dict[tuple, list[dict]] = {}
        for job in jobs:
            split.setdefault(tuple(job.get(f) for f in differing), []).append(job)
        parts += [(key, _apart_text(part[0], differing), part) for part in split.values()]
    return parts


def _aggregate_group(key: tuple[str, ...], jobs: list[dict], shared: set[str],
                     objective: str, apart: str | None = None) -> dict:
    completed = [job for job in jobs if job.get(record.STATUS) == record.COMPLETED]
    settings = " ".join(
        [compact_override(e) for e in key if e not in shared and not _is_label_field(e)]
        + ([apart] if apart else [])
    )
    # `variant` names the operator a job really built (standard with dilation 2 is dilated).
    variant = _first(jobs, "variant") or _first(jobs, "model")
    model = _first(jobs, "model") or variant
    kernel, dilation = _first(jobs, "kernel_size"), _first(jobs, "dilation")
    label = config_label(variant, kernel, dilation)
    config = {
        "label": f"{label} {settings}" if settings else label,
        "variant": variant,
        "model": model,
        "operator": operator_of(model),
        "settings": settings,
        "kernel_size": kernel,
        "dilation": dilation_key(dilation),  # a schedule (one per block) as a tuple
        "channels": _first(jobs, "channels"),
        "padding": _first(jobs, "padding"),
        "objective": objective,
        # What tells it apart from configurations with its overrides (configurations()).
        "apart": apart,
    }
    for field in SHAPE_FIELDS + RATIO_FIELDS + (record.RF_HOLES_THEORY,):
        config[field] = _first(completed + jobs, field)
    for metric in METRICS + EXTRA_METRICS + NEW_METRICS:
        values = [_job_metric(job, metric, objective) for job in completed]
        config.update(zip((f"{metric}_{s}" for s in ("mean", "std", "n")), mean_std(values),
                          strict=True))
        if metric in ("test_acc", "objective", "train_ms_per_sample", "inference_ms_per_image"):
            config[f"{metric}_values"] = finite(values)
    reasons = [job.get(record.REASON) for job in jobs if job.get(record.STATUS) != "completed"]
    config.update(
        n_jobs=len(jobs),
        n_completed=len(completed),
        seeds=[job.get(record.SEED) for job in jobs],
        status=_status_text(jobs),
        reasons=list(dict.fromkeys(str(r) for r in reasons if r)),
        overrides=" ".join(key),
        job_dirs=[job.get(record.JOB_DIR) for job in jobs],
        erf_files=[
            (job.get(record.JOB_DIR), job.get("erf_npy"), job.get("erf_png")) for job in completed
        ],
    )
    return config


def aggregate(summaries: list[dict]) -> list[dict]:
    """One dict per configuration (jobs differing only in seed), ranked by the mean of the
    sweep's objective (:func:`convexp.record.objective_name`: what its jobs maximised, e.g.
    best_val_acc), never by test accuracy; configurations without a completed job come last.

    Jobs with equal overrides but different recipes or models (:func:`configurations`) are not
    pooled: each is a configuration of its own, what tells it apart (``apart``) in its label.

    Keys: ``CSV_COLUMNS`` plus ``settings`` (the overrides that tell configurations with equal
    model, kernel and dilation apart), ``apart``, ``erf_files``, the per-seed ``*_values``
    and ``welch`` (the test against the best, run here once:
    :func:`convexp.report.stats.test_against_best`).
    """
    objective = record.objective_name(summaries)
    parts = configurations(summaries)
    shared = set.intersection(*(set(key) for key, _, _ in parts)) if parts else set()
    configs = [_aggregate_group(key, jobs, shared, objective, apart)
               for key, apart, jobs in parts]
    configs.sort(
        key=lambda c: (c["objective_mean"] is None, -(c["objective_mean"] or 0), c["label"])
    )
    label_counts = Counter(c["label"] for c in configs)
    seen: Counter[str] = Counter()
    for config in configs:  # keep labels unique even if two configurations look alike
        if label_counts[config["label"]] > 1:
            seen[config["label"]] += 1
            config["label"] += f" #{seen[config['label']]}"
    test_against_best(configs)
    return configs


def point_label(config: dict) -> str:
    """A plot's label of a configuration: its operator, kernel and dilation (``dw-sep k3 d2``),
    or its model's name where it has neither, then the settings that tell it apart."""
    parts = []
    if config["kernel_size"] is not None:
        parts.append(f"k{config['kernel_size']}")
    if config["dilation"] is not None:
        parts.append(f"d{dilation_text(config['dilation'])}")
    short = SHORT_OPERATOR.get(config["operator"])
    parts.insert(0, short if parts and short else str(config["model"]))
    if config["settings"]:
        parts.append(config["settings"])
    return " ".join(parts)


def operators(configs: list[dict]) -> list[str]:
    names = list(dict.fromkeys(c["operator"] for c in configs))
    order = {STANDARD_CONV: 0, SEPARABLE_CONV: 1}
    return sorted(names, key=lambda n: (order.get(n, 2), names.index(n)))


# ----------------------------------------------------------------------------- ERFs


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
        if arrays and len({a.shape for a in arrays}) == 1:
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
    order = {op: i for i, op in enumerate(operators([r["config"] for r in rows]))}
    rows.sort(
        key=lambda r: (
            order[r["operator"]],
            r["kernel"] or 0,
            dilation_sort_key(r["dilation"]),
            r["config"]["label"],
        )
    )
    return rows
