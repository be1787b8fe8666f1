"""The record a job leaves in its output dir, and the one place that names it: the file names,
the statuses a summary can hold, the summary fields that other modules read, and the loader of
a sweep dir's summaries. The job writer (`convexp.job`, `convexp.task`), the sweep callback
(`convexp.callbacks`) and the report (`convexp.report`) all use this module.

No torch, no numpy: the report and the sweep callback import it without a training stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# --- files in a job's output dir -------------------------------------------------------------
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESULT_FILES = (SUMMARY, METRICS, CHECKPOINTS)  # a dir holding any of them holds a run's results
REPORT_DIR = "report"  # a sweep's comparison report, beside its job dirs
# Dirs under a sweep dir that hold no job of their own (copies of a summary may live there).
NOT_JOB_DIRS = frozenset({"wandb", ".hydra", ".submitit"})

# --- statuses ---------------------------------------------------------------------------------
RUNNING = "running"  # written when the job starts; a job killed outright keeps it
COMPLETED = "completed"
FAILED = "failed"
DIVERGED = "diverged"
INTERRUPTED = "interrupted"
FINAL_STATUSES = (COMPLETED, FAILED, DIVERGED, INTERRUPTED)
STATUS_ORDER = (*FINAL_STATUSES, RUNNING)  # how counts and mixed statuses are listed

# --- summary fields read outside the job ------------------------------------------------------
STATUS, REASON = "status", "reason"
JOB_DIR = "job_dir"  # added by the loader: the job's dir relative to the sweep dir
OVERRIDES, SEED = "overrides", "seed"
TEST_ACC, BEST_VAL_ACC, FINAL_VAL_ACC = "test_acc", "best_val_acc", "final_val_acc"
# The metric a sweep maximised (cfg `objective`) and its value; older summaries lack both,
# and their sweeps maximised best_val_acc (the default objective).
OBJECTIVE, OBJECTIVE_VALUE = "objective", "objective_value"
DEFAULT_OBJECTIVE = BEST_VAL_ACC
OBJECTIVES = (BEST_VAL_ACC, FINAL_VAL_ACC, TEST_ACC)
WANDB_GROUP = "wandb_group"  # the W&B group the job logged into (newer summaries)
# Why the job's process gave up on online W&B (None: it did not), so that a sweep's report,
# written in another process than a joblib or submitit job, obeys the same decision.
WANDB_ONLINE_UNAVAILABLE = "wandb_online_unavailable"
TRAIN_SAMPLES_PER_S = "train_samples_per_s"
INPUT_SHAPE = "input_shape"  # the images the model took, [C, H, W]
INFERENCE_MS = "inference_ms_per_image"
# The share of the pixels inside the theoretical receptive field that no path of nonzero
# kernel taps reaches (the gridding of stacked dilations), from the built model's structure;
# `erf_rf_holes` is the same share measured on the trained ERF.
RF_HOLES_THEORY = "rf_holes_theory"
# What a job trains and how it is measured, as 12 hex digits of its config (recipe_hash): jobs
# with the same overrides but another recipe (a YAML edited between them, a default changed in
# another version of convexp) are not pooled as seeds of one configuration (convexp.report).
RECIPE = "recipe"
# Config fields that change neither what a job trains nor how it is measured: its seed, where
# the data lies, the device and threads, logging, checkpoints. `trainer.precision` too: `auto`
# is resolved per machine (and a resumed run's config holds the resolved value); the precision
# a job ran is its summary's `precision`.
NOT_RECIPE = ("seed", "mode", "resume", "checkpoint", "trust_checkpoint", "logger", "hydra",
              "data.root", "data.verify", "data.eval_batch_size", "trainer.device",
              "trainer.compile", "trainer.compile_mode", "trainer.precision", "trainer.threads",
              "trainer.progress", "trainer.progress_every_s", "trainer.checkpoint",
              "trainer.finite_check_every", "trainer.channels_last")


def recipe_hash(config: Mapping) -> str:
    """A job's recipe (:data:`RECIPE`): 12 hex digits of its resolved config (a plain dict)
    without the fields of :data:`NOT_RECIPE`."""
    plain = json.loads(json.dumps(config, default=str))
    for path in NOT_RECIPE:
        *parents, leaf = path.split(".")
        node: Any = plain
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_summary(path: str | Path) -> dict:
    """One job's summary (``path``: the job dir or its summary.json). An unreadable file gives
    a failed record whose reason says why; a summary without a status counts as failed."""
    file = Path(path)
    file = file / SUMMARY if file.is_dir() else file
    try:
        summary = json.loads(file.read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return {STATUS: FAILED, REASON: f"unreadable {SUMMARY}: {err}"}
    if not summary.get(STATUS):
        summary[STATUS] = FAILED
        summary[REASON] = summary.get(REASON) or f"{SUMMARY} records no status"
    return summary


def load_summaries(path: str | Path) -> list[dict]:
    """Every job's summary under ``path`` (a sweep dir, or any dir of runs), each with
    ``job_dir`` (relative to ``path``) added, in natural order of their dirs (2 before 10).
    Copies under ``wandb``, ``.hydra`` and ``.submitit`` are skipped."""
    root = Path(path)
    summaries = []
    for file in root.rglob(SUMMARY):
        job_dir = file.parent.relative_to(root)
        if NOT_JOB_DIRS.intersection(job_dir.parts):
            continue
        summary = read_summary(file)
        summary[JOB_DIR] = job_dir.as_posix()
        summaries.append(summary)
    return sorted(summaries, key=lambda s: _natural_key(s[JOB_DIR]))


def load_sweeps(paths: Sequence[str | Path]) -> tuple[Path, list[dict]]:
    """The summaries of several sweep dirs (or any dirs of runs) as one list, e.g. your own
    model's sweep next to convexp's: ``job_dir`` is relative to the dirs' common folder, which
    is returned with them. A job under two of the dirs (one inside the other) is loaded once."""
    dirs = [Path(p).resolve() for p in paths]
    root = Path(os.path.commonpath(dirs))
    seen: set[str] = set()
    summaries = []
    for folder in dirs:
        for summary in load_summaries(folder):
            job_dir = (folder / summary[JOB_DIR]).relative_to(root).as_posix()
            if job_dir not in seen:
                seen.add(job_dir)
                summaries.append({**summary, JOB_DIR: job_dir})
    return root, summaries


def count_statuses(summaries: list[dict]) -> Counter:
    """How many jobs hold each status (every final status present, 0 where none has it)."""
    counts: Counter = Counter(dict.fromkeys(FINAL_STATUSES, 0))
    counts.update(s.get(STATUS) or FAILED for s in summaries)
    return counts


def objective_name(summaries: list[dict]) -> str:
    """The metric a sweep maximised: the one most of its jobs recorded, else best_val_acc."""
    names = Counter(s[OBJECTIVE] for s in summaries if s.get(OBJECTIVE) in OBJECTIVES)
    return names.most_common(1)[0][0] if names else DEFAULT_OBJECTIVE


def objective_value(summary: dict, name: str) -> Any:
    """A job's value of the objective ``name``: its recorded objective_value when it recorded
    that objective, else the field itself (older summaries)."""
    if summary.get(OBJECTIVE) == name and summary.get(OBJECTIVE_VALUE) is not None:
        return summary[OBJECTIVE_VALUE]
    return summary.get(name)
