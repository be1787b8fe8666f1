"""The report as text: the terminal's table (at most 120 columns), the Markdown report and the
CSV (every column), the sentences of the test against the best, the Pareto fronts, the noisy
costs and the failures. Reads the statistics :mod:`convexp.report.runs` computed; computes
none of its own."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convexp import record
from convexp._format import si, text_table
from convexp.atomic import atomic_write_text
from convexp.record import RF_HOLES_THEORY
from convexp.report.runs import (
    EXTRA_METRICS,
    METRICS,
    RATIO_FIELDS,
    SHAPE_FIELDS,
    compact_override,
    objective_text,
)
from convexp.report.stats import (
    ALPHA,
    NOISY_SPREAD,
    TEST_FIELDS,
    TEST_NAME,
    CostAxis,
    cost,
    noisy_costs,
    pareto_fronts,
    ranked,
    reference_config,
)
from convexp.variants import dilation_text

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
    # the sweep's objective (ranking and test), and training time in ms
    "objective",
    *(f"objective_{stat}" for stat in ("mean", "std", "n")),
    "objective_values",
    *(f"train_ms_per_sample_{stat}" for stat in ("mean", "std", "n")),
    record.RF_HOLES_THEORY,  # the share of the RF no path of nonzero taps reaches
]
STD_NOTE = "std = sample standard deviation over seeds (ddof=1); only completed jobs count"
TERMINAL_WIDTH = 120  # the printed table fits; the CSV and Markdown keep every column
ERF_NOTE = (
    "ERF 95%: side of the smallest centred square holding 95% of the ERF's mass. Holes in RF: "
    "share of the theoretical RF's pixels that get no gradient at all (gridding); holes in "
    "theory: the share no path of nonzero kernel taps reaches, from the built model (stacked "
    "equal dilations leave some, rates such as 1, 2, 5 none). An RF larger "
    "than the image is cut by the image border, and so is the ERF."
)
PLOT_TEXT = {
    "acc_vs_cost.png": (
        "The sweep's objective for its cost, one panel per cost. Each point is a configuration "
        "(mean over seeds, error bar = sample std where n > 1), coloured by conv operator, "
        "marked by dilation and labelled operator/kernel/dilation. Black rings and the dashed "
        "staircase: the Pareto front (no other configuration is both at least as good and at "
        "least as cheap). Points with equal cost (dilation leaves params and MACs unchanged) "
        "are spread slightly sideways, dilation ascending from left to right."
    ),
    "heatmap.png": (
        "Mean of the sweep's objective (%) per kernel size (rows) and dilation (columns), one "
        "panel per conv operator, one colour scale for all panels; each cell shows mean, ± std "
        "and n."
    ),
    "erf.png": (
        "Effective receptive fields (Luo et al. 2016): |d centre unit / d input| averaged over "
        "test images (and seeds), each normalised to a maximum of 1, one colour scale. The "
        "dashed square is the theoretical receptive field; black pixels inside it get no "
        "gradient at all (gridding of dilated convs)."
    ),
}


# ----------------------------------------------------------------------------- sentences


def _p_text(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def acc_cell(config: dict, metric: str) -> str:
    mean, std, n = (config[f"{metric}_{stat}"] for stat in ("mean", "std", "n"))
    if mean is None:
        return "-"
    return f"{mean * 100:.2f} (n=1)" if n == 1 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def pair_sentence(reference: dict, other: dict) -> tuple[str, str]:
    """('same' | 'untestable' | 'different', sentence): the test of ``other`` against the
    reference, as :func:`convexp.report.stats.test_against_best` ran it."""
    diff = (reference["objective_mean"] - other["objective_mean"]) * 100
    names = f"{reference['label']} vs {other['label']}: {diff:+.2f} pp"
    result = other.get("welch")
    if result is None:
        n_a, n_b = len(reference["objective_values"]), len(other["objective_values"])
        return "untestable", f"{names}; cannot be tested (n = {n_a} vs {n_b})"
    stats = (
        f"Welch t = {result.t:.2f}, df = {result.df:.1f}, {_p_text(result.p)} "
        f"(n = {result.n_a} vs {result.n_b})"
    )
    if result.p < ALPHA:
        return "different", f"{names}, {stats}: significant at p < {ALPHA:g}"
    return "same", f"{names}, {stats}: not significant at p < {ALPHA:g}"


def selection_note(configs: list[dict]) -> str:
    objective = objective_text(configs)
    if configs and configs[0]["objective"] == record.TEST_ACC:
        return ("Ranked by mean test acc over seeds, the sweep's objective (objective=test_acc): "
                "choosing on the test set makes its accuracy an optimistic estimate.")
    return (f"Ranked by mean {objective} over seeds, the sweep's objective: the best is chosen "
            f"and tested on validation accuracy, never on the test set; test acc is shown for "
            "information.")


def noise_notes(configs: list[dict]) -> list[str]:
    """Sentences: the test used, then each configuration tested against the best one."""
    objective = objective_text(configs)
    done = ranked(configs)
    if len(done) < 2:
        return [f"Fewer than two configurations have a {objective}: nothing to compare."]
    best, reference = done[0], reference_config(configs)
    notes = [
        f"Test: {TEST_NAME} of each configuration's {objective} over seeds (completed jobs) "
        f"against the best configuration's; a difference is significant when p < {ALPHA:g}. "
        "It needs at least two seeds on both sides (n = 1: cannot be tested). Each comparison "
        "is tested on its own (no correction for multiple comparisons: about "
        f"{ALPHA:.0%} of true ties still come out significant), and with few seeds the test "
        "has little power: not significant is not the same as equal.",
        f"Best: {best['label']}, {objective} {acc_cell(best, 'objective')} % (test acc "
        f"{acc_cell(best, 'test_acc')} %, for information).",
    ]
    if reference is None:
        notes.append("No configuration has two or more seeds: nothing can be tested.")
        return notes
    if reference is not best:
        notes.append(
            f"The best has a single seed, so the reference for the test is the best "
            f"configuration with at least two seeds: {reference['label']}, {objective} "
            f"{acc_cell(reference, 'objective')} %."
        )
    verdicts: dict[str, list[str]] = {"same": [], "untestable": [], "different": []}
    for other in done:
        if other is reference:
            continue
        verdict, sentence = pair_sentence(reference, other)
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


def cost_text(value: float | None, axis: CostAxis) -> str:
    if value is None:
        return "-"
    if axis.counted:
        return si(value) + (" MACs" if axis.name == "macs" else " params")
    return f"{value:.3g} {axis.unit}"


def pareto_notes(configs: list[dict]) -> list[str]:
    notes = []
    for axis, front in pareto_fronts(configs).items():
        items = ", ".join(
            f"{c['label']} ({cost_text(cost(c, axis), axis)}, {c['objective_mean'] * 100:.2f}%)"
            for c in front
        )
        notes.append(f"Pareto front on {axis.label.split(' (')[0]}: {items}.")
    return notes


def noisy_notes(configs: list[dict]) -> list[str]:
    """A warning per measured cost whose seeds disagree by more than NOISY_SPREAD."""
    notes = []
    for name, found in noisy_costs(configs).items():
        worst, spread = found[0]
        which = "1 configuration varies" if len(found) == 1 else f"{len(found)} vary"
        notes.append(
            f"The {name} figures are noisy: {which} by more than {NOISY_SPREAD:.0%} of the "
            f"mean across seeds (most: {worst['label']}, {spread:.0%}). Jobs that share a busy "
            "machine measure its load as much as their own cost: read that panel and its "
            "Pareto front with care (MACs and params are counted, not measured)."
        )
    return notes


# ----------------------------------------------------------------------------- tables


def _p_cell(config: dict, reference: dict | None, configs: list[dict]) -> str:
    if config["objective_mean"] is None or reference is None:
        return "-"
    if config is reference:  # "ref" where the best has a single seed and cannot be it
        return "best" if config is ranked(configs)[0] else "ref"
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


def _seeds_cell(c: dict) -> str:
    n = c["objective_n"]
    return str(n) if n == c["n_jobs"] else f"{n}/{c['n_jobs']}"


def _accuracy_columns(configs: list[dict]) -> list[tuple[str, str]]:
    """(header, metric): the objective first, then test accuracy (for information), and best
    validation accuracy where the objective is another."""
    objective = configs[0]["objective"] if configs else record.DEFAULT_OBJECTIVE
    columns = [(f"{objective_text(configs)} (%)", "objective")]
    if objective != record.BEST_VAL_ACC:
        columns.append(("best val acc (%)", "best_val_acc"))
    if objective != record.TEST_ACC:
        columns.append(("test acc (%)", "test_acc"))
    return columns


def table(configs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the full comparison table (accuracies in %)."""
    show_ratios = any(c[field] is not None for c in configs for field in RATIO_FIELDS)
    show_latency = any(c["inference_ms_per_image_mean"] is not None for c in configs)
    show_erf = any(c["erf_95_mean"] is not None for c in configs)
    reference = reference_config(configs)
    accuracy = _accuracy_columns(configs)
    headers = ["variant", "kernel", "dilation", "params", "MACs", "receptive field"]
    headers += ["params vs standard conv", "MACs vs standard conv"] if show_ratios else []
    headers += [h for h, _ in accuracy] + ["p vs best", "train ms/sample"]
    headers += ["inference ms/image"] if show_latency else []
    headers += ["ERF 95% (px)"] if show_erf else []
    headers += ["seeds", "status", "reason"]
    rows = []
    for c in configs:
        variant = str(c["variant"]) + (f" ({c['settings']})" if c["settings"] else "")
        kernel = str(c["kernel_size"]) if c["kernel_size"] is not None else "-"
        dilation = dilation_text(c["dilation"])  # 2, or a schedule: 1-2-5
        row = [variant, kernel, dilation, si(c["params"]), si(c["macs"]),
               si(c["receptive_field"])]
        if show_ratios:
            row += [f"{c[f]:.3g}x" if c[f] is not None else "-" for f in RATIO_FIELDS]
        row += [acc_cell(c, metric) for _, metric in accuracy]
        row += [_p_cell(c, reference, configs), _plain_cell(c, "train_ms_per_sample")]
        row += [_plain_cell(c, "inference_ms_per_image")] if show_latency else []
        row += [_plain_cell(c, "erf_95")] if show_erf else []
        row += [_seeds_cell(c), c["status"], "; ".join(c["reasons"])]
        rows.append(row)
    return headers, rows


def terminal_table(configs: list[dict], *, indent: str = "", limit: int | None = None,
                   width: int = TERMINAL_WIDTH) -> list[str]:
    """The table a terminal shows, best first: configuration, MACs, the objective, test accuracy,
    the test against the best, training time, seeds and status, in at most ``width`` columns
    (long names cut with "…"); the first ``limit`` configurations only, if given."""
    reference = reference_config(configs)
    accuracy = _accuracy_columns(configs)
    headers = ["variant", "kernel", "dilation", "MACs", *(h for h, _ in accuracy)]
    headers += ["p vs best", "ms/sample", "seeds", "status"]
    rows = []
    for c in configs[:limit] if limit else configs:
        variant = str(c["variant"]) + (f" ({c['settings']})" if c["settings"] else "")
        kernel = str(c["kernel_size"]) if c["kernel_size"] is not None else "-"
        dilation = dilation_text(c["dilation"])  # 2, or a schedule: 1-2-5
        row = [variant, kernel, dilation, si(c["macs"])]
        row += [acc_cell(c, metric) for _, metric in accuracy]
        ms = c["train_ms_per_sample_mean"]
        row += [_p_cell(c, reference, configs), f"{ms:.3g}" if ms is not None else "-"]
        row += [_seeds_cell(c), c["status"]]
        rows.append(row)
    return text_table(headers, rows, indent=indent, max_width=width,
                      shrink=(0, len(headers) - 1))


def apart_notes(configs: list[dict]) -> list[str]:
    """A sentence per set of configurations with the same overrides that are not pooled
    (convexp.report.runs.configurations: another recipe, or another model built)."""
    split: dict[str, list[dict]] = {}
    for c in configs:
        if c.get("apart"):
            split.setdefault(c["overrides"], []).append(c)
    return [
        f"Not pooled: {', '.join(c['label'] for c in group)} have the same overrides but not "
        "the same recipe or model: a config file edited between their runs, or another "
        "version of convexp. Compare the .hydra/config.yaml and summary.json of their jobs, "
        f"e.g. {', '.join(str(c['job_dirs'][0]) for c in group)}."
        for group in split.values()
    ]


def failure_lines(summaries: list[dict]) -> list[str]:
    lines = []
    for s in summaries:
        if s.get(record.STATUS) != record.COMPLETED:
            overrides = s.get(record.OVERRIDES) or []
            shown = " ".join(compact_override(o) for o in overrides) or s.get("model") or "?"
            reason = s.get(record.REASON) or "no reason given"
            lines.append(
                f"{s.get(record.JOB_DIR, '?')}: {s.get(record.STATUS) or 'unknown'} [{shown}]: "
                f"{reason}"
            )
    return lines


def erf_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the ERF table (one row per configuration with a saved ERF)."""
    headers = ["operator", "kernel", "dilation", "theoretical RF (px)", "ERF 95% (px)"]
    headers += ["ERF 95% / RF", "holes in RF", "holes in theory", "seeds"]
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
                dilation_text(row["dilation"]),
                rf_text,
                str(erf_95) if erf_95 is not None else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
                f"{holes:.0%}" if holes is not None else "-",
                f"{theory:.0%}" if (theory := row["config"].get(RF_HOLES_THEORY)) is not None
                else "-",
                str(row["n"]),
            ]
        )
    return headers, cells


# ----------------------------------------------------------------------------- documents


def _intro(source: Path | Sequence[Path], summaries: list[dict], configs: list[dict],
           code: str) -> list[str]:
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    where = ", ".join(f"{code}{s}{code}" for s in sources)
    return [
        f"{len(summaries)} jobs in {len(configs)} configurations from {where}",
        selection_note(configs),
        f"Accuracies in %, mean ± std over seeds; {STD_NOTE}; "
        f"p vs best: {TEST_NAME} of the {objective_text(configs)} against the best "
        f"configuration with two or more seeds, significant when p < {ALPHA:g}. "
        "Training time in ms per sample (1000 / train samples/s).",
    ]


def render_text(
    source: Path | Sequence[Path], summaries: list[dict], configs: list[dict],
    erf_rows: list[dict] | None = None,
) -> str:
    """The report for a terminal: the table in at most 120 columns (every column is in the
    CSV and the Markdown), the test, the fronts, the noisy costs, the ERFs, the failures."""
    lines = [*_intro(source, summaries, configs, ""), *apart_notes(configs),
             "Every column, the reasons included: comparison.md and comparison.csv.", ""]
    lines += terminal_table(configs)
    lines += ["", f"Test against the best ({objective_text(configs)}):"]
    lines += [f"  {n}" for n in noise_notes(configs)]
    fronts = pareto_notes(configs) + noisy_notes(configs)
    if fronts:
        lines += ["", f"Accuracy for its cost (mean {objective_text(configs)}; lower cost is "
                  "better):"]
        lines += [f"  {n}" for n in fronts]
    if erf_rows:
        headers, cells = erf_table(erf_rows)
        lines += ["", "Effective receptive field:"]
        lines += text_table(headers, cells, rule=False, indent="  ")
        lines += [f"  {ERF_NOTE}"]
    failures = failure_lines(summaries)
    lines += ["", f"Failures ({len(failures)}):", *(f"  {f}" for f in failures or ["none"])]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_markdown(
    source: Path | Sequence[Path],
    summaries: list[dict],
    configs: list[dict],
    plots: list[Path] | None = None,
    erf_rows: list[dict] | None = None,
) -> str:
    headers, rows = table(configs)
    plot_names = {p.name for p in plots or []}
    failures = failure_lines(summaries)
    lines = [
        "# Convolution variant comparison",
        "",
        *_intro(source, summaries, configs, "`"),
        *apart_notes(configs),
        "",
        _md_row(headers),
        _md_row(["---"] * len(headers)),
        *(_md_row(row) for row in rows),
        "",
        f"## Test against the best ({objective_text(configs)})",
        "",
        *(f"- {note}" for note in noise_notes(configs)),
        "",
    ]
    fronts = pareto_notes(configs) + noisy_notes(configs)
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
        lines += [_md_row(erf_headers), _md_row(["---"] * len(erf_headers))]
        lines += [_md_row(row) for row in erf_cells]
        lines += ["", ERF_NOTE, ""]
    lines += [f"## Failures ({len(failures)})", "", *(f"- {line}" for line in failures or ["none"])]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if isinstance(value, tuple):  # a dilation schedule, as summary.json holds it
        value = list(value)
    return "" if value is None else json.dumps(value) if isinstance(value, list) else value


def csv_rows(configs: list[dict]) -> list[list[Any]]:
    """The CSV's rows as typed values (None for an empty cell), in ``CSV_COLUMNS`` order."""
    return [[c.get(column) for column in CSV_COLUMNS] for c in configs]


def write_csv(configs: list[dict], path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_csv_value(v) for v in row] for row in csv_rows(configs))
    atomic_write_text(path, buffer.getvalue())
