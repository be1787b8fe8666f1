"""The record of one job: its context, its output dir, summary.json and metrics.jsonl.

A job claims its output dir before anything else: summary.json is created exclusively (so two
runs can never write into one dir) with status `running`, and replaced atomically at the end
(`completed | failed | diverged | interrupted`). A job killed with SIGKILL thus still leaves a
summary that says `running`, and `python -m convexp.compare` lists it as incomplete.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convexp.atomic import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    finite_or_none,
    os_error_text,
)
from convexp.errors import ConfigError
from convexp.record import METRICS, RESULT_FILES, RUNNING, SUMMARY

# Room kept for the final summary.json: made when the job claims its dir, released to write the
# last record when the disk is full (a final summary is a few KB).
RESERVE, RESERVE_BYTES = ".convexp-reserve", 1 << 20


@dataclass
class JobContext:
    """What the caller (Hydra, the Python API, a test) tells a job about its surroundings."""

    output_dir: Path = Path("outputs/run")
    overrides: list[str] = field(default_factory=list)  # as given, e.g. ["model.dilation=2"]
    multirun: bool = False  # a failed job returns NaN so that the sweep goes on
    # True (the CLI): a diverged or failed run ends the process with its exit code. False
    # (the Python API): it returns NaN and its summary says what happened.
    exit_on_failure: bool = True
    sweep_name: str | None = None
    launcher: dict | None = None  # hydra.launcher of a multirun (thread budget)
    job_num: int | None = None  # the job's number in a multirun
    tags: list[str] = field(default_factory=list)  # presets the job came from, e.g. "textbook"


class JobExit(Exception):
    """Raised after a job has recorded everything, to end it with a non-zero exit code."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


class Stop(JobExit):
    """An interrupted job: ends the process (a sweep too) with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum, f"stopped by signal {signum}")


class WriteFailed(JobExit):
    """A file of the run could not be written (e.g. a full disk): the job ends `failed`, its
    reason naming the file and the cause, exit code 1."""

    def __init__(self, path: Path, error: OSError):
        self.reason = f"could not write {path}: {os_error_text(error)}"
        super().__init__(1, f"run failed: {self.reason}")


def write_or_fail(path: Path, write: Callable[[], Any]) -> Any:
    """`write()`, with an OSError turned into WriteFailed naming `path`."""
    try:
        return write()
    except OSError as e:
        raise WriteFailed(path, e) from e


def holds_results(out_dir: Path) -> list[str]:
    """The result files of a run found in `out_dir`."""
    return [name for name in RESULT_FILES if (Path(out_dir) / name).exists()]


def check_writable(out_dir: Path) -> None:
    try:
        ensure_writable_dir(out_dir)
    except OSError as e:
        raise ConfigError(f"output dir {out_dir} is not writable: {e.strerror or e}") from e


class Job:
    """The state of one training job, so that every exit path can record it."""

    def __init__(self, ctx: JobContext, out_dir: Path, summary: dict[str, Any],
                 run_id: str | None = None, resuming: bool = False):
        self.ctx, self.out_dir = ctx, Path(out_dir)
        self.started = time.time()
        self.run_id = run_id or secrets.token_hex(4)
        import torch  # only its version: the rest of this module needs no torch

        self.summary: dict[str, Any] = {
            "status": RUNNING, "reason": None, **summary,
            "output_dir": str(self.out_dir), "torch_version": torch.__version__,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.logger = None
        self.finished = False  # the final summary.json is written
        self._claim(resuming)
        self._reserve()

    def _claim(self, resuming: bool) -> None:
        """Make the output dir this job's: refuse one that holds another run's results."""
        check_writable(self.out_dir)
        found = [name for name in holds_results(self.out_dir) if name != SUMMARY]
        if not resuming:
            if found:
                raise ConfigError(
                    f"output dir {self.out_dir} already holds another run's results "
                    f"({', '.join(found)}); choose a new hydra.run.dir")
            # The running summary is written beside, then hard-linked into place: the link
            # fails if another run's summary.json is there, and a reader never sees a
            # summary.json without its content.
            claim = self.out_dir / f".{SUMMARY}.{self.run_id}.claim"
            atomic_write_json(claim, {**self.summary, "wall_s": 0.0})
            try:
                os.link(claim, self.out_dir / SUMMARY)
            except FileExistsError:
                raise ConfigError(
                    f"output dir {self.out_dir} already holds another run's results "
                    f"({SUMMARY}); convexp never writes over them. Choose a new "
                    f"hydra.run.dir, or continue that run with resume={self.out_dir}"
                ) from None
            finally:
                claim.unlink()
        self.write_summary()

    def _reserve(self) -> None:
        try:
            atomic_write(self.out_dir / RESERVE, lambda f: f.write(bytes(RESERVE_BYTES)))
        except OSError:  # too little room already: the run fails at its first write
            pass

    def release_reserve(self) -> None:
        (self.out_dir / RESERVE).unlink(missing_ok=True)

    def write_summary(self, final: bool = False, **values) -> None:
        """Replace summary.json; `final`: the job's last record, written with the reserved
        room if the disk is full. WriteFailed if it cannot be written."""
        self.summary.update(values, wall_s=round(time.time() - self.started, 3))
        path = self.out_dir / SUMMARY
        try:
            atomic_write_json(path, self.summary)
        except OSError as e:
            if not (final and (self.out_dir / RESERVE).exists()):
                raise WriteFailed(path, e) from e
            self.release_reserve()
            write_or_fail(path, lambda: atomic_write_json(path, self.summary))
        if final:
            self.finished = True
            self.release_reserve()

    def write_metrics(self, history: list[dict]) -> None:
        lines = (json.dumps(finite_or_none(m)) + "\n" for m in history)
        path = self.out_dir / METRICS
        write_or_fail(path, lambda: atomic_write_text(path, "".join(lines)))


def record_lost_job(out_dir: Path, overrides: list[str], reason: str) -> bool:
    """Record as `failed` a job whose process died without recording itself (a worker killed
    with SIGKILL, by the OOM killer): its summary.json says `running`, or it has none yet. A
    summary that records an end already (e.g. `interrupted`) is kept: returns False."""
    path = Path(out_dir) / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = {"overrides": overrides, "output_dir": str(out_dir)}
    if summary.get("status", "running") != "running":
        return False
    summary.update(status="failed", reason=reason)
    try:
        atomic_write_json(path, summary)
    except OSError:  # the sweep's count line still names the job
        pass
    (Path(out_dir) / RESERVE).unlink(missing_ok=True)
    return True
