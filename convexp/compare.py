"""``python -m convexp.compare <multirun dir> [--out DIR] [--no-plots] [--wandb ...]``: the
entry point of the sweep report, kept where earlier versions had it (and where the
``convexp-compare`` script points). The report itself is the package :mod:`convexp.report`;
this module re-exports its public names. See docs/report.md."""

from __future__ import annotations

import sys

from convexp.record import load_summaries
from convexp.report.cli import main, write_report
from convexp.report.plots import (
    heatmap_data,
    plot_costs,
    plot_erf_grid,
    plot_heatmap,
    write_plots,
)
from convexp.report.render import (
    CSV_COLUMNS,
    PLOT_TEXT,
    noise_notes,
    pareto_notes,
    render_markdown,
    render_text,
    table,
    terminal_table,
    write_csv,
)
from convexp.report.runs import (
    aggregate,
    compact_override,
    config_key,
    erf_rows,
    format_float,
    operator_of,
)
from convexp.report.stats import (
    ALPHA,
    COST_AXES,
    TEST_NAME,
    CostAxis,
    WelchResult,
    betainc,
    cost_axes,
    pareto_front,
    reference_config,
    t_two_sided_p,
    test_against_best,
    welch_t_test,
)
from convexp.report.wandb_upload import log_report_to_wandb

__all__ = [
    "ALPHA", "COST_AXES", "CSV_COLUMNS", "PLOT_TEXT", "TEST_NAME", "CostAxis", "WelchResult",
    "aggregate", "betainc", "compact_override", "config_key", "cost_axes", "erf_rows",
    "format_float", "heatmap_data", "load_summaries", "log_report_to_wandb", "main",
    "noise_notes", "operator_of", "pareto_front", "pareto_notes", "plot_costs", "plot_erf_grid",
    "plot_heatmap", "reference_config", "render_markdown", "render_text", "t_two_sided_p",
    "table", "terminal_table", "test_against_best", "welch_t_test", "write_csv", "write_plots",
    "write_report",
]

if __name__ == "__main__":
    sys.exit(main())
