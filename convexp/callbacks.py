"""Hydra callbacks: a clear error for an output dir that cannot be written or that holds another
run's results (checked before Hydra writes anything into it), a sweep's closing count, and an
exit code that says whether any job failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from convexp import record
from convexp.atomic import ensure_writable_dir, os_error_text
from convexp.checkpoint import resolve_checkpoint
from convexp.errors import ConvexpError
from convexp.job import holds_results
from convexp.report import aggregate, terminal_table, write_report
from convexp.report.runs import objective_text, repeated_runs
from convexp.report.wandb_upload import (
    log_report_to_wandb,
    obey_the_jobs_decision,
    report_group,
)
from convexp.schema import value
from convexp.validate import mode_problems

TOP = 5  # configurations shown at the end of a sweep
# What makes hydra.sweep.subdir one dir per job: convexp records one job per dir.
ONE_DIR_PER_JOB = ("hydra.job.num", "hydra.job.id", "hydra.job.override_dirname")


def _require_writable(path: Path, key: str) -> None:
    """Hydra creates the output dir before any job code runs; fail first, in one line."""
    try:
        ensure_writable_dir(path)
    except OSError as e:
        print(f"convexp: error: output dir {path} ({key}) is not writable: {e.strerror or e}",
              file=sys.stderr)
        raise SystemExit(2) from None


def _refuse(message: str) -> None:
    print(f"convexp: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ConvexpCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        # An option the mode does not take (resume=A mode=export) is refused before the run
        # dir exists: a refused command leaves no empty dir behind.
        problems = mode_problems(config)
        if problems:
            _refuse("invalid config: " + "; ".join(problems))
        if value(config.mode) == "train" and config.resume:
            try:
                resolve_checkpoint(config.resume)
            except ConvexpError as e:
                _refuse(str(e))
        _require_writable(run_dir, "hydra.run.dir")
        # A resumed run continues its own dir, an export writes beside its checkpoint: any
        # other run stops here, before Hydra writes its .hydra/ and log into another run's.
        continues = (value(config.mode) == "train" and config.resume) or (
            value(config.mode) == "export")
        found = holds_results(run_dir)
        if found and not continues:
            _refuse(f"output dir {run_dir} already holds another run's results "
                    f"({', '.join(found)}); convexp never writes over them. Choose a new "
                    f"hydra.run.dir, or continue that run with resume={run_dir}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        subdir = str(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir"))
        if not any(key in subdir for key in ONE_DIR_PER_JOB):
            # Two jobs in one dir: the second is refused (the dir holds the first's results)
            # after Hydra wrote its config over the first's .hydra/config.yaml.
            _refuse(f"hydra.sweep.subdir={subdir} can give two jobs of the sweep one dir: "
                    "name each job's own with ${hydra.job.num} (the default) or "
                    "${hydra.job.override_dirname}")
        sweep_dir = Path(config.hydra.sweep.dir)
        _require_writable(sweep_dir, "hydra.sweep.dir")
        found = sorted(sweep_dir.glob(f"*/{record.SUMMARY}"))
        if found:
            _refuse(f"sweep dir {sweep_dir} already holds the results of {len(found)} jobs; "
                    "convexp never writes over them. Choose a new hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summaries = record.load_summaries(sweep_dir)
        counts = record.count_statuses(summaries)
        total = sum(counts.values())
        print(f"sweep done: {total} jobs, {counts['completed']} completed, "
              f"{counts['failed']} failed, {counts['diverged']} diverged, "
              f"{counts['interrupted']} interrupted ({sweep_dir})", flush=True)
        # The same configuration and seed twice (`seed=0,0`): one run must not count as two
        # seeds, so the repeat is left out of the comparison (python -m convexp.compare
        # refuses such a pair outright).
        repeats = {repeat: first for first, repeat in repeated_runs(summaries)}
        pooled = [s for s in summaries if s[record.JOB_DIR] not in repeats]
        configs = aggregate(pooled) if counts[record.COMPLETED] else []
        if configs:
            print(f"top {min(TOP, len(configs))} of {len(configs)} configurations by mean "
                  f"{objective_text(configs)} (test acc for information; the full table: "
                  "the report below):", flush=True)
            print("\n".join(terminal_table(configs, indent="    ", limit=TOP)), flush=True)
        for s in summaries:
            if s[record.STATUS] != record.COMPLETED:
                print(f"  job {s[record.JOB_DIR]} {s[record.STATUS]}: "
                      f"{s.get(record.REASON) or ''}", flush=True)
        for repeat, first in repeats.items():
            print(f"  job {repeat} repeats job {first} (same configuration and seed): left out "
                  "of the comparison", flush=True)
        reported = _report(config, sweep_dir, pooled, configs) if configs else True
        if total == 0 or counts[record.COMPLETED] < total or not reported:
            raise SystemExit(1)


def _report(config: DictConfig, sweep_dir: Path, summaries: list[dict],
            configs: list[dict]) -> bool:
    """The sweep's comparison report (what `python -m convexp.compare` writes), and with W&B
    the same table and plots in the group its jobs logged into, as a run of its own
    (job_type=report). False when the local report could not be written (a full disk): the
    sweep then exits 1; a W&B upload that fails is said in one line and changes nothing."""
    try:
        report_dir, _ = write_report(sweep_dir, summaries=summaries, configs=configs)
    except Exception as e:  # noqa: BLE001 - every job's own results are written already
        cause = (f"{os_error_text(e)} ({e.filename})" if isinstance(e, OSError) and e.filename
                 else os_error_text(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}")
        print(f"convexp: error: the comparison report could not be written: {cause}; the "
              f"jobs' results are complete, rerun python -m convexp.compare {sweep_dir}",
              flush=True)
        return False
    print(f"comparison report: {report_dir} (python -m convexp.compare {sweep_dir})",
          flush=True)
    logger = config.logger
    if logger.name != "wandb" or value(logger.mode) == "disabled":
        return True
    try:
        obey_the_jobs_decision(summaries)
        group = report_group(summaries, sweep_dir, logger.group,
                             config.hydra.runtime.choices.get("experiment"))
        log_report_to_wandb(configs, report_dir, project=logger.project,
                            entity=logger.entity, group=group, mode=value(logger.mode))
    except Exception as e:  # noqa: BLE001 - the local report is written
        print(f"convexp: the report's W&B upload failed ({type(e).__name__}: {e}); the local "
              f"report is complete: {report_dir}", flush=True)
    return True
