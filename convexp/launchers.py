"""Sweeps that survive a killed worker: what the launchers that `hydra/launcher=joblib` and
`hydra/launcher=submitit_local` name (hydra_plugins/convexp_launchers, where Hydra requires a
launcher class to live; conf/hydra/launcher/*.yaml) run.

Hydra's joblib launcher runs jobs in a loky pool: when one worker dies (SIGKILL, the OOM killer),
loky breaks the whole pool and the sweep aborts with TerminatedWorkerError, the other running
job killed with it and the rest never run. Here each job runs in a process of its own (at most
`n_jobs` at a time, as joblib would), so a dead worker takes only its own job. Its job is
recorded `failed` with the signal in its reason (convexp.job.record_lost_job), the rest run,
and the sweep ends with its count line, its report and exit 1. The submitit_local launcher's
jobs already run in their own processes; only collecting their results aborted the sweep, and
its controller keeps the job's exit status to itself: convexp.reaper runs each job's process
and writes how it ended into the job's log, where the reason is read from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import shlex
import sys
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import open_dict

from convexp import reaper
from convexp.job import record_lost_job
from convexp.signals import first_signal, stop_requested

log = logging.getLogger(__name__)


def _pickler():
    """cloudpickle where installed (as loky uses it: joblib's own copy is gone), else pickle:
    the task function is module-level and Hydra's objects pickle either way."""
    try:
        import cloudpickle
    except ImportError:
        import pickle as cloudpickle
    return cloudpickle


def _run_pickled(payload: bytes, conn) -> None:
    """A worker process: run one job, send its JobReturn back."""
    cloudpickle = _pickler()
    function, args = cloudpickle.loads(payload)
    result = function(*args)
    conn.send_bytes(cloudpickle.dumps(result))
    conn.close()


def _lost(launcher, overrides: Sequence[str], job_num: int, reason: str) -> JobReturn:
    """Record a job whose worker died and return what a failed convexp job returns (NaN), so
    that the sweeper goes on."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config,
                                                                    list(overrides))
    with open_dict(config):
        config.hydra.job.num = job_num
    job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    if record_lost_job(job_dir, list(overrides), reason):
        log.error("[job %d] failed: %s", job_num, reason)
    return JobReturn(overrides=list(overrides), cfg=None, hydra_cfg=None,
                     working_dir=str(job_dir), task_name=str(config.hydra.job.name),
                     status=JobStatus.COMPLETED, _return_value=math.nan)


def unused_joblib_fields(launcher) -> list[str]:
    """The joblib plugin's fields set away from their defaults that this launcher cannot
    honour: it runs each job in a process of its own, `n_jobs` at a time, without
    joblib.Parallel, so `timeout`, `backend`, `prefer`, ... would do nothing."""
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    defaults = {f.name: f.default for f in dataclasses.fields(JobLibLauncherConf)}
    return [f"hydra.launcher.{key}={val}" for key, val in launcher.joblib.items()
            if key in defaults and key not in ("_target_", "n_jobs") and val != defaults[key]]


def launch_in_processes(launcher, job_overrides: Sequence[Sequence[str]],
                        initial_job_idx: int) -> list[JobReturn]:
    """hydra/launcher=joblib: `n_jobs` jobs at a time (the joblib launcher's field), each in a
    fresh (spawned) process of its own, which runs what joblib's worker would."""
    from hydra_plugins.hydra_joblib_launcher import _core as joblib_core

    unused = unused_joblib_fields(launcher)
    if unused:  # before any job runs: one line, exit 2, as for any field that does nothing
        print(f"convexp: error: {', '.join(unused)}: convexp's joblib launcher runs each job "
              "in a process of its own, hydra.launcher.n_jobs at a time, and reads no other "
              "field of the joblib plugin; drop it", file=sys.stderr)
        raise SystemExit(2)
    cloudpickle = _pickler()

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n_jobs = int(launcher.joblib.get("n_jobs") or -1)
    n_jobs = max(1, os.cpu_count() + 1 + n_jobs if n_jobs < 0 else n_jobs)
    log.info("launching %d jobs, %d at a time, each in a process of its own; sweep output "
             "dir: %s", len(job_overrides), n_jobs, sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
    context = multiprocessing.get_context("spawn")
    singleton_state = Singleton.get_state()
    pending = list(enumerate(job_overrides))
    running: dict[int, tuple[Any, Any]] = {}
    results: dict[int, JobReturn] = {}
    while pending or running:
        while pending and len(running) < n_jobs and not stop_requested():
            idx, overrides = pending.pop(0)
            payload = cloudpickle.dumps((joblib_core.execute_job, (
                initial_job_idx + idx, overrides, launcher.hydra_context, launcher.config,
                launcher.task_function, singleton_state)))
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_run_pickled, args=(payload, send))
            process.start()
            send.close()
            running[idx] = (process, receive)
        if not running:  # stopped by a signal before the rest started
            break
        wait([p.sentinel for p, _ in running.values()] + [r for _, r in running.values()])
        for idx, (process, receive) in list(running.items()):
            result = None
            if receive.poll():
                try:
                    result = cloudpickle.loads(receive.recv_bytes())
                except (EOFError, OSError):  # died while sending
                    result = None
            elif process.is_alive():
                continue
            process.join()
            receive.close()
            del running[idx]
            results[idx] = result if result is not None else _lost(
                launcher, job_overrides[idx], initial_job_idx + idx,
                reaper.exit_reason(process.exitcode))
    if stop_requested():
        raise SystemExit(128 + first_signal())
    return [results[idx] for idx in sorted(results)]


def launch_surviving_lost_jobs(launcher, launch, job_overrides: Sequence[Sequence[str]],
                               initial_job_idx: int) -> list[JobReturn]:
    """hydra/launcher=submitit_local: submitit's own `launch`, whose jobs run in processes of
    their own already, with a job that ended without a result recorded as lost rather than
    raised (submitit's UncompletedJobError aborted the sweep). Each job's process runs under
    convexp.reaper, which writes how it ended into the job's log, so that the reason can name
    the signal that killed it."""
    import submitit

    auto_executor = submitit.AutoExecutor
    submitted = []

    class AutoExecutor(auto_executor):
        """What Hydra's launch builds (`submitit.AutoExecutor(...)`), with `local_python`, the
        executor's own option for the command that runs a job's Python, naming the reaper."""

        def __init__(self, folder, cluster=None, **kwargs):
            if cluster == "local" and reaper.available():
                kwargs.setdefault("local_python", reaper.command(shlex.quote(sys.executable)))
            super().__init__(folder, cluster=cluster, **kwargs)

        def map_array(self, *args, **kwargs):
            jobs = super().map_array(*args, **kwargs)
            submitted.extend(jobs)
            return [_Result(job) for job in jobs]

    submitit.AutoExecutor = AutoExecutor
    try:
        returns = launch(job_overrides, initial_job_idx)
    finally:
        submitit.AutoExecutor = auto_executor
    return [ret if ret is not None else _lost(
                launcher, job_overrides[i], initial_job_idx + i, _submitit_reason(submitted[i]))
            for i, ret in enumerate(returns)]


class _Result:
    """A submitit job whose results() gives [None] where the job died without a result."""

    def __init__(self, job):
        self.job = job

    def results(self) -> list:
        try:
            return self.job.results()
        except Exception:  # noqa: BLE001 - submitit's UncompletedJobError, FailedJobError
            return [None]


def _submitit_reason(job) -> str:
    """How the job's process ended, as the reaper wrote it into the job's log (submitit's local
    controller reaps the process and exits 0 whatever happened to it). Without that line (no
    reaper on this platform, or the reaper itself killed) only the lost result is known."""
    try:
        paths = job.paths
        status = reaper.status_in(paths.stderr)
        if status is None:  # stderr_to_stdout: one log
            status = reaper.status_in(paths.stdout)
    except Exception:  # noqa: BLE001 - a log we cannot find changes only the wording
        status = None
    if status is not None:
        return reaper.exit_reason(status)
    try:
        state = job.state
    except Exception:  # noqa: BLE001 - a state we cannot read changes nothing
        state = "unknown"
    return (f"its process ended without a result (submitit state {state}; killed by a "
            "signal?)")
