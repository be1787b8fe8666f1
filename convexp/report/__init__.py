"""A sweep's comparison report (``python -m convexp.compare``): one row per configuration,
seeds pooled, ranked by the sweep's objective.

* :mod:`convexp.report.runs` - the jobs (loaded by :mod:`convexp.record`) as configurations;
* :mod:`convexp.report.stats` - means, Welch's t-test against the best, Pareto fronts, noisy
  costs: computed once per report;
* :mod:`convexp.report.render` - the terminal text, Markdown and CSV;
* :mod:`convexp.report.plots` - the figures (matplotlib, the ``report`` extra);
* :mod:`convexp.report.wandb_upload` - the report as a W&B run;
* :mod:`convexp.report.cli` - ``write_report`` and ``main``.

Nothing here imports torch, and nothing imports wandb or matplotlib until it is used.
"""

from convexp.report.cli import main, write_report
from convexp.report.render import render_markdown, render_text, terminal_table
from convexp.report.runs import aggregate, erf_rows, load_summaries

__all__ = ["aggregate", "erf_rows", "load_summaries", "main", "render_markdown",
           "render_text", "terminal_table", "write_report"]
