"""Names, one owner for the job, its W&B run and the report. Torch-free.

* `config_label`: a configuration, from its built variant: `depthwise_dilated k5 d2` (with a
  dilation per block: `dilated k3 d1-2`). So
  `model=depthwise_separable model.dilation=2` is named for `depthwise_dilated`, as its
  `variant` says (convexp.variants).
* `run_name`: a job, its label and seed: `depthwise_dilated k5 d2 s1` (its W&B run's name).
* `sweep_group`: the W&B group of a Hydra sweep's jobs, from the sweep dir and its experiment:
  `kernel_dilation_sweep-2026-11-25_14-03-07_5e1c0a`, `sweep-2026-12-01_22-17-55_1d03fc`. Each
  job records the group it used in summary.json (`wandb_group`); `group_of_jobs` reads it back,
  so the report logs into its jobs' group instead of computing one of its own.
* `sync_glob`: what `wandb sync` is given for every offline run of a sweep, the report's
  included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from convexp.record import WANDB_GROUP
from convexp.variants import dilation_text, variant_of

SWEEP_TAG_LIMIT = 64  # W&B refuses longer tags


def config_label(variant: str, kernel_size: int | None = None, dilation=None) -> str:
    """`depthwise_dilated k5 d2`: the variant, with kernel size and dilation where the model
    has them (book_cnn has neither, a user's `_target_` model may have either). A dilation
    schedule, one per block, reads `d1-2-5`."""
    parts = [str(variant) if variant is not None else "?"]
    parts += [f"k{kernel_size}"] if kernel_size is not None else []
    parts += [f"d{dilation_text(dilation)}"] if dilation is not None else []
    return " ".join(parts)


def run_name(record: Mapping) -> str:
    """`depthwise_dilated k5 d2 s1`, from a job's summary fields (`variant`, `kernel_size`,
    `dilation`, `seed`); `model` stands in for a missing `variant`."""
    variant = record.get("variant") or variant_of(record.get("model"), record.get("dilation"))
    label = config_label(variant, record.get("kernel_size"), record.get("dilation"))
    return label if record.get("seed") is None else f"{label} s{record['seed']}"


def sweep_group(sweep_dir: str | Path, experiment: str | None = None) -> str:
    """The W&B group of a sweep's jobs: its experiment (`sweep` without one) and the last two
    parts of its dir (date, then time and suffix)."""
    parts = Path(sweep_dir).parts[-2:]
    return f"{experiment or 'sweep'}-{'_'.join(parts)}"


def sweep_tag(sweep_dir: str | Path, experiment: str | None = None) -> str:
    """The W&B tag that names a sweep on each of its runs (W&B tags are at most 64 chars)."""
    return sweep_group(sweep_dir, experiment)[:SWEEP_TAG_LIMIT]


def sync_glob(sweep_dir: str | Path) -> str:
    """`wandb sync` for every offline run of a sweep: its jobs' and its report's."""
    return str(Path(sweep_dir) / "*" / "wandb" / "offline-run-*")


def _experiment_of(overrides: Iterable[str]) -> str | None:
    for entry in overrides or ():
        name, sep, value = str(entry).partition("=")
        if sep and name.lstrip("+~") == "experiment":
            return value
    return None


def group_of_jobs(summaries: Iterable[Mapping], sweep_dir: str | Path,
                  experiment: str | None = None) -> str:
    """The W&B group a sweep's jobs logged into: the `wandb_group` they recorded (the most
    common one, should they differ). Sweep dirs written before jobs recorded it get the group
    those versions gave their jobs: `sweep_group` of the dir and its experiment (`experiment`,
    else the jobs' `experiment=` override)."""
    summaries = list(summaries)
    recorded = [s[WANDB_GROUP] for s in summaries if s.get(WANDB_GROUP)]
    if recorded:
        return max(dict.fromkeys(recorded), key=recorded.count)
    if experiment is None:
        experiments = [e for s in summaries if (e := _experiment_of(s.get("overrides") or []))]
        experiment = experiments[0] if experiments else None
    return sweep_group(sweep_dir, experiment)
