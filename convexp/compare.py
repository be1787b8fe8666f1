"""Compare the jobs of a Hydra multirun: one row per configuration, seeds pooled.

    python -m convexp.compare <multirun dir> [--out DIR] [--no-plots]

Reads every ``summary.json`` under the multirun directory (skipping ``wandb`` and ``.hydra``),
groups jobs that differ only in ``seed`` into one configuration, prints a table ranked by mean
test accuracy, says which differences lie within the seed spread, lists the failed jobs, and
writes ``comparison.csv``, ``comparison.md`` and PNG plots into ``<multirun dir>/report/``.

Statistics use completed jobs only; std is the sample standard deviation (ddof=1) over seeds
and is left empty when a configuration has a single seed. The CSV holds accuracies as
fractions, as in ``summary.json``; the printed and Markdown tables show percentages.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

SKIP_DIRS = {"wandb", ".hydra"}
STATUS_ORDER = ("completed", "diverged", "failed", "interrupted")
METRICS = ("test_acc", "best_val_acc", "final_val_acc", "train_samples_per_s")
SHAPE_FIELDS = ("params", "macs", "receptive_field")
RATIO_FIELDS = ("param_ratio_vs_standard", "macs_ratio_vs_standard")
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
]
STD_NOTE = "std = sample standard deviation over seeds (ddof=1); only completed jobs count"
ADJACENT_CHECK_TOP = 10  # adjacent ranks checked for ties among this many best configurations
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


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


def _mean_std(values: list[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (ddof=1, None for fewer than two values) and count of the finite values."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
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


def _aggregate_group(key: tuple[str, ...], jobs: list[dict], shared: set[str]) -> dict:
    completed = [job for job in jobs if job.get("status") == "completed"]
    settings = " ".join(e for e in key if e not in shared and not _is_label_field(e))
    # `variant` names the operator a job really built (standard with dilation 2 is dilated).
    variant = _first(jobs, "variant") or _first(jobs, "model")
    kernel, dilation = _first(jobs, "kernel_size"), _first(jobs, "dilation")
    label_parts = [str(variant) if variant is not None else "?"]
    label_parts += [f"k{kernel}"] if kernel is not None else []
    label_parts += [f"d{dilation}"] if dilation is not None else []
    config = {
        "label": " ".join(label_parts + ([settings] if settings else [])),
        "variant": variant,
        "settings": settings,
        "kernel_size": kernel,
        "dilation": dilation,
        "channels": _first(jobs, "channels"),
        "padding": _first(jobs, "padding"),
    }
    for field in SHAPE_FIELDS + RATIO_FIELDS:
        config[field] = _first(completed + jobs, field)
    for metric in METRICS:
        stats = _mean_std([job.get(metric) for job in completed])
        config.update(zip((f"{metric}_mean", f"{metric}_std", f"{metric}_n"), stats, strict=True))
    reasons = [job.get("reason") for job in jobs if job.get("status") != "completed"]
    config.update(
        n_jobs=len(jobs),
        n_completed=len(completed),
        seeds=[job.get("seed") for job in jobs],
        status=_status_text(jobs),
        reasons=list(dict.fromkeys(str(r) for r in reasons if r)),
        overrides=" ".join(key),
        job_dirs=[job.get("job_dir") for job in jobs],
    )
    return config


def aggregate(summaries: list[dict]) -> list[dict]:
    """One dict per configuration (jobs differing only in seed), best mean test accuracy first.

    Configurations without any completed test accuracy come last. Keys: ``CSV_COLUMNS`` plus
    ``settings`` (the overrides that tell configurations with equal model, kernel and dilation
    apart).
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
    return configs


# ----------------------------------------------------------------------------- noise check


def compare_pair(a: dict, b: dict) -> tuple[str, str]:
    """('within' | 'unknown' | 'beyond', sentence) for two configurations' mean test accuracy."""
    diff = abs(a["test_acc_mean"] - b["test_acc_mean"]) * 100
    names = f"{a['label']} and {b['label']} differ by {diff:.2f} pp"
    if a["test_acc_std"] is None or b["test_acc_std"] is None:
        single = " and ".join(c["label"] for c in (a, b) if c["test_acc_std"] is None)
        return "unknown", (
            f"{names}, but {single} has a single seed (n=1), so no seed spread is known: "
            "cannot tell whether the difference is meaningful"
        )
    spread_a, spread_b = a["test_acc_std"] * 100, b["test_acc_std"] * 100
    spread = f"their seed spread (±{spread_a:.2f}/±{spread_b:.2f})"
    if diff <= spread_a + spread_b:
        return "within", f"{names}, within {spread}: not a meaningful difference"
    return "beyond", f"{names}, more than {spread}"


def noise_notes(configs: list[dict]) -> list[str]:
    """Sentences on which differences in mean test accuracy are within the seed spread."""
    ranked = [c for c in configs if c["test_acc_mean"] is not None]
    if len(ranked) < 2:
        return ["Fewer than two configurations have a test accuracy: nothing to compare."]
    best = ranked[0]
    notes = [
        "Rule: |mean_a - mean_b| <= std_a + std_b counts as noise; std is the sample std "
        "over seeds (ddof=1), completed jobs only.",
        f"Best: {best['label']}, test acc {_acc_cell(best, 'test_acc')} %.",
    ]
    verdicts: dict[str, list[str]] = {"within": [], "unknown": [], "beyond": []}
    for other in ranked[1:]:
        verdict, sentence = compare_pair(best, other)
        verdicts[verdict].append(other["label"])
        if verdict != "beyond":
            notes.append(sentence + ".")
    notes.append(
        "Indistinguishable from the best: " + (", ".join(verdicts["within"]) or "none") + "."
    )
    if verdicts["unknown"]:
        notes.append(
            "No spread known to compare with the best: " + ", ".join(verdicts["unknown"]) + "."
        )
    if verdicts["beyond"]:
        behind = ", ".join(verdicts["beyond"])
        notes.append(f"Clearly behind the best (beyond the seed spread): {behind}.")
    top = ranked[1:ADJACENT_CHECK_TOP]
    for rank, (a, b) in enumerate(pairwise(top), start=2):
        verdict, sentence = compare_pair(a, b)
        if verdict == "within":
            notes.append(f"Ranks {rank} and {rank + 1}: {sentence}.")
    return notes


# ----------------------------------------------------------------------------- rendering


def _si(value: Any) -> str:
    if value is None:
        return "-"
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return f"{value:g}"


def _acc_cell(config: dict, metric: str) -> str:
    mean, std, n = (config[f"{metric}_{stat}"] for stat in ("mean", "std", "n"))
    if mean is None:
        return "-"
    return f"{mean * 100:.2f} (n=1)" if n == 1 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def table(configs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the comparison table (accuracies in %)."""
    show_ratios = any(c[field] is not None for c in configs for field in RATIO_FIELDS)
    headers = ["variant", "kernel", "dilation", "params", "MACs", "receptive field"]
    headers += ["params vs std", "MACs vs std"] if show_ratios else []
    headers += ["best val acc (%)", "test acc (%)", "samples/s", "seeds", "status", "reason"]
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
            _si(c["params"]),
            _si(c["macs"]),
            _si(c["receptive_field"]),
        ]
        if show_ratios:
            row += [f"{c[f]:.3g}x" if c[f] is not None else "-" for f in RATIO_FIELDS]
        speed = c["train_samples_per_s_mean"]
        n_acc = c["test_acc_n"]
        row += [_acc_cell(c, "best_val_acc"), _acc_cell(c, "test_acc")]
        row += [f"{speed:,.0f}" if speed is not None else "-"]
        row += [str(n_acc) if n_acc == c["n_jobs"] else f"{n_acc}/{c['n_jobs']}"]
        row += [c["status"], "; ".join(c["reasons"])]
        rows.append(row)
    return headers, rows


def _failure_lines(summaries: list[dict]) -> list[str]:
    lines = []
    for s in summaries:
        if s.get("status") != "completed":
            overrides = " ".join(map(str, s.get("overrides") or [])) or s.get("model") or "?"
            reason = s.get("reason") or "no reason given"
            lines.append(
                f"{s.get('job_dir', '?')}: {s.get('status') or 'unknown'} [{overrides}]: {reason}"
            )
    return lines


def render_text(source: Path, summaries: list[dict], configs: list[dict]) -> str:
    headers, rows = table(configs)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        f"{len(summaries)} jobs in {len(configs)} configurations from {source}",
        f"Accuracies in %, mean ± std over seeds; {STD_NOTE}.",
        "",
    ]
    for row in [headers, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    lines += ["", "Noise check (test accuracy):", *(f"  {n}" for n in noise_notes(configs))]
    failures = _failure_lines(summaries)
    lines += ["", f"Failures ({len(failures)}):", *(f"  {f}" for f in failures or ["none"])]
    return "\n".join(lines)


def render_markdown(source: Path, summaries: list[dict], configs: list[dict]) -> str:
    headers, rows = table(configs)

    def md_row(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    failures = _failure_lines(summaries)
    lines = [
        "# Convolution variant comparison",
        "",
        f"{len(summaries)} jobs in {len(configs)} configurations from `{source}`.",
        f"Accuracies in %, mean ± std over seeds; {STD_NOTE}.",
        "",
        md_row(headers),
        md_row(["---"] * len(headers)),
        *(md_row(row) for row in rows),
        "",
        "## Noise check (test accuracy)",
        "",
        *(f"- {note}" for note in noise_notes(configs)),
        "",
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


def write_plots(configs: list[dict], out_dir: Path) -> list[Path]:
    """Accuracy-vs-cost scatter plots and per-variant kernel x dilation heatmaps (PNG)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: skipping plots", file=sys.stderr)
        return []

    def new_axes(size: tuple[float, float]) -> tuple[Any, Any]:
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()

    variants = list(dict.fromkeys(str(c["variant"]) for c in configs))
    written = []
    for x_field, x_label in (("params", "parameters"), ("macs", "MACs")):
        fig, ax = new_axes((7, 4.5))
        points = [c for c in configs if c["test_acc_mean"] is not None and (c[x_field] or 0) > 0]
        for i, variant in enumerate(variants):
            group = [c for c in points if str(c["variant"]) == variant]
            if group:
                ax.errorbar(
                    [c[x_field] for c in group],
                    [c["test_acc_mean"] * 100 for c in group],
                    yerr=[(c["test_acc_std"] or 0) * 100 for c in group],
                    marker=MARKERS[i % len(MARKERS)],
                    color=f"C{i % 10}",
                    linestyle="none",
                    capsize=3,
                    label=variant,
                )
        if points:
            ax.set_xscale("log")
            ax.legend(fontsize="small")
        else:
            ax.text(
                0.5, 0.5, f"no completed runs with {x_label}", ha="center", transform=ax.transAxes
            )
        ax.set(
            xlabel=f"{x_label} (log scale)",
            ylabel="test accuracy (%)",
            title=f"Test accuracy vs {x_label} (mean ± sample std over seeds)",
        )
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / f"acc_vs_{x_field}.png")
        fig.savefig(written[-1], dpi=120)

    for variant in variants:
        cells = [
            c
            for c in configs
            if str(c["variant"]) == variant and None not in (c["kernel_size"], c["dilation"])
        ]
        if cells:
            safe_name = re.sub(r"[^\w.-]", "_", variant)
            written.append(out_dir / f"heatmap_{safe_name}.png")
            _plot_heatmap(variant, cells, written[-1], new_axes)
    return written


def _plot_heatmap(variant: str, cells: list[dict], path: Path, new_axes: Any) -> None:
    from matplotlib import colormaps

    kernels = sorted({c["kernel_size"] for c in cells})
    dilations = sorted({c["dilation"] for c in cells})
    grid = np.full((len(kernels), len(dilations)), np.nan)
    failed = set()
    for c in cells:  # several configurations in one cell (other settings): show the best
        i, j = kernels.index(c["kernel_size"]), dilations.index(c["dilation"])
        if c["test_acc_mean"] is None:
            failed.add((i, j))
        else:
            grid[i, j] = np.fmax(grid[i, j], c["test_acc_mean"] * 100)
    fig, ax = new_axes((1.6 + 1.1 * len(dilations), 1.4 + 0.8 * len(kernels)))
    cmap = colormaps["viridis"].with_extremes(bad="0.9")  # missing cells light grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            color = "white" if image.norm(value) < 0.5 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=9)
        elif (i, j) in failed:
            ax.text(j, i, "failed", ha="center", va="center", color="0.3", fontsize=8)
    ax.set_xticks(range(len(dilations)), [str(d) for d in dilations])
    ax.set_yticks(range(len(kernels)), [str(k) for k in kernels])
    ax.set(xlabel="dilation", ylabel="kernel size", title=f"{variant}: mean test accuracy (%)")
    if np.isfinite(grid).any():
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convexp-compare",
        description="Compare the jobs of a Hydra multirun (seeds pooled per configuration).",
    )
    parser.add_argument("multirun_dir", type=Path, help="multirun directory with job dirs")
    parser.add_argument("--out", type=Path, help="report dir (default: <multirun_dir>/report)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
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

    configs = aggregate(summaries)
    print(render_text(args.multirun_dir, summaries, configs))
    out_dir = args.out or args.multirun_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(configs, out_dir / "comparison.csv")
    (out_dir / "comparison.md").write_text(render_markdown(args.multirun_dir, summaries, configs))
    plots = [] if args.no_plots else write_plots(configs, out_dir)
    written = ["comparison.csv", "comparison.md", *(p.name for p in plots)]
    print(f"\nReport written to {out_dir}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
