"""The report as one W&B run (``job_type="report"``) in its sweep's group: the aggregated rows
as a ``wandb.Table``, every plot as a ``wandb.Image``, the best configuration in the summary.

wandb is imported when a report is uploaded, never when this module is imported. W&B start-up
(credentials, mode, host probe, the once-per-process online decision, the offline fallback) is
not this module's: :func:`convexp.wandb_env.start_run` owns it, so the report obeys the decision
its jobs made in this process (offline after a failed online start, no second wait).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convexp.naming import group_of_jobs, sync_glob
from convexp.record import REPORT_DIR, WANDB_ONLINE_UNAVAILABLE
from convexp.report.render import CSV_COLUMNS, PLOT_TEXT, csv_rows
from convexp.report.runs import objective_text
from convexp.wandb_env import adopt_online_unavailable, start_run


def obey_the_jobs_decision(summaries: list[dict]) -> None:
    """When the sweep's jobs gave up on online W&B (in their own processes, under joblib or
    submitit), this process does too: the report goes offline at once, no second wait."""
    reasons = [s[WANDB_ONLINE_UNAVAILABLE] for s in summaries if s.get(WANDB_ONLINE_UNAVAILABLE)]
    adopt_online_unavailable(reasons[0] if reasons else None)


def report_group(summaries: list[dict], sweep_dir: Path, group: str | None = None,
                 experiment: str | None = None) -> str:
    """The W&B group of a sweep's report: ``group`` if given, else its jobs' group
    (:func:`convexp.naming.group_of_jobs`)."""
    return group or group_of_jobs(summaries, sweep_dir, experiment)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def log_report_to_wandb(
    configs: list[dict],
    report_dir: str | Path,
    *,
    project: str = "convexp",
    entity: str | None = None,
    group: str | None = None,
    mode: str = "auto",
    name: str = "report",
    dir: str | Path | None = None,  # noqa: A002 - wandb.init's name
) -> str:
    """Log a written report to one W&B run in ``group``: ``configs`` (the aggregated rows,
    :func:`convexp.report.runs.aggregate`) as the table "comparison" with the CSV's columns
    and typed values (lists as JSON text), every PNG of ``report_dir`` as an image keyed by its
    file name without ``.png``, and the best configuration in the run summary. The run is
    finished also when logging fails (exit code 1, the error is raised again). ``mode``:
    auto | online | offline | disabled. The run's files go under ``dir`` (default:
    ``report_dir``). Returns the run id."""
    import wandb

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise FileNotFoundError(f"no report dir {report_dir}: write the report first")
    rows = [[_cell(value) for value in row] for row in csv_rows(configs)]
    run, _, _ = start_run(
        mode,
        project=project,
        entity=entity,
        group=group,
        job_type="report",
        name=name,
        dir=str(dir or report_dir),
        # A sweep's report: one `wandb sync` line for the jobs and the report together.
        sync_hint=(sync_glob(report_dir.resolve().parent)
                   if dir is None and report_dir.name == REPORT_DIR else None),
        config={"report_dir": str(report_dir.resolve()), "n_configurations": len(rows)},
    )
    exit_code = 1
    try:
        payload: dict[str, Any] = {"comparison": wandb.Table(columns=CSV_COLUMNS, data=rows,
                                                 allow_mixed_types=True)}
        for png in sorted(report_dir.glob("*.png")):
            payload[png.stem] = wandb.Image(str(png), caption=PLOT_TEXT.get(png.name))
        run.log(payload)
        best = next((c for c in configs if c["objective_mean"] is not None), None)
        if best is not None:
            run.summary.update(
                {
                    "best_label": best["label"],
                    "objective": best["objective"],
                    f"best_{best['objective']}_mean": best["objective_mean"],
                    "best_test_acc_mean": best["test_acc_mean"],
                    "n_configurations": len(rows),
                    "ranked_by": f"mean {objective_text(configs)}",
                }
            )
        exit_code = 0
        return run.id
    finally:
        run.finish(exit_code=exit_code)
