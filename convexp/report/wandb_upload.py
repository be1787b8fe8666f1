"""The report as one W&B run (``job_type="report"``) in its sweep's group: the aggregated rows
as a ``wandb.Table``, every plot as a ``wandb.Image``, the best configuration in the summary.

wandb is imported when a report is uploaded, never when this module is imported. W&B start-up
(credentials, mode, host probe, the once-per-process online decision, the offline fallback) is
not this module's: :func:`_start_run` hands it to the run logger's, in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convexp import record
from convexp.report.render import CSV_COLUMNS, PLOT_TEXT, csv_rows
from convexp.report.runs import objective_text


def _start_run(mode: str, **init: Any) -> Any:
    """``wandb.init(mode=..., **init)`` through the run logger's start-up, so that the report
    obeys the decision its jobs made: ``auto`` resolved as theirs; online only when this
    process has not given up on online W&B and the host answers the probe; an online init that
    fails anyway falls back to an offline run (for ``wandb sync``), once per process."""
    import wandb

    from convexp import loggers

    mode = loggers.resolve_mode(mode)
    if mode == "online":
        earlier = loggers._online_unavailable is not None
        blocker = loggers._online_blocker()
        if blocker is not None:
            if not earlier:
                loggers._give_up_online(blocker)
            mode = "offline"
    settings = wandb.Settings(init_timeout=loggers._init_timeout(), silent=True)
    try:
        return wandb.init(mode=mode, settings=settings, **init)
    except Exception as e:  # noqa: BLE001 - online failed: the same fallback as the jobs'
        if mode != "online":
            raise
        loggers._give_up_online(f"online init failed ({type(e).__name__}: {e})")
        loggers._release_wandb_service()
        return wandb.init(mode="offline", settings=settings, **init)


def report_group(summaries: list[dict], sweep_dir: Path, group: str | None = None,
                 experiment: str | None = None) -> str:
    """The W&B group of a sweep's report: ``group`` if given, else the group its jobs recorded
    (``wandb_group`` in summary.json), else, for sweep dirs written before that field, the
    group the jobs computed then (``EXPERIMENT-DATE_TIME``, :func:`convexp.job.sweep_name`;
    ``sweep-DATE_TIME`` when the experiment is not known)."""
    from convexp.job import sweep_name

    return group or record.recorded_group(summaries) or sweep_name(str(sweep_dir), experiment)


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
    run = _start_run(
        mode,
        project=project,
        entity=entity,
        group=group,
        job_type="report",
        name=name,
        dir=str(dir or report_dir),
        reinit="finish_previous",
        config={"report_dir": str(report_dir.resolve()), "n_configurations": len(rows)},
    )
    exit_code = 1
    try:
        payload: dict[str, Any] = {"comparison": wandb.Table(columns=CSV_COLUMNS, data=rows)}
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
