"""Experiment loggers, registered by name with their schema: adding one is a class here (or in
any imported module) plus `conf/logger/<name>.yaml`. A logger failure is reported once and then
ignored: it never stops a run nor touches the run's local files (metrics.jsonl, summary.json,
checkpoints)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from convexp import wandb_env
from convexp.record import RECIPE, RF_HOLES_THEORY
from convexp.registry import Registry
from convexp.schema import value

log = logging.getLogger(__name__)

LOGGERS: Registry = Registry("logger")


# W&B keys in one place: what a job is (its inputs, known before it trains) are top-level
# keys of the W&B run's config, what it gave (status, accuracies, speed) its summary; never
# both, so W&B's Runs table shows each column once.
CONFIG_KEYS = ("variant", "kernel_size", "dilation", "seed", "params", "macs",
               "receptive_field", "param_ratio_vs_standard", "macs_ratio_vs_standard",
               "precision", "objective",  # objective: the metric's name (its value is a result)
               RF_HOLES_THEORY,  # the RF's holes in theory, a property of the built model
               RECIPE)  # what the job trains, without its seed (record.recipe_hash)


def wandb_config(resolved: dict, record: dict) -> dict:
    """A W&B run's config: the resolved Hydra config, plus the job's inputs from its
    summary record (`record`) as top-level keys, for W&B's tables and sweeps."""
    return {**resolved, **{k: record[k] for k in CONFIG_KEYS if k in record}}


@LOGGERS.register("none")
class NullLogger:
    """No experiment tracking: the run's local files are the record."""

    records_failed_jobs = False

    def __init__(self, cfg=None, config=None, run_dir=None, run_id=None, run_name=None,
                 group=None, sync_hint=None):
        pass

    run_id: str | None = None
    mode: str | None = None  # no W&B run

    def log_metrics(self, metrics: dict[str, Any]) -> None: ...
    def log_model_table(self, report) -> None: ...
    def log_images(self, images: dict[str, Path]) -> None: ...
    def update_summary(self, values: dict[str, Any]) -> None: ...
    def log_model(self, path: Path, name: str, metadata: dict) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


def _guarded(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.run is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - W&B must never break a run
            log.warning("W&B %s failed (%s: %s); local results are unaffected, W&B logging "
                        "stops here.", method.__name__, type(e).__name__, e)
            self.failed_run, self.run = self.run, None  # still finished at the end
            return None

    return wrapper


@LOGGERS.register("wandb")
class WandbLogger:
    """One W&B run per job. Metrics use `epoch` as their step metric.

    Online (credentials or mode=online) needs the W&B host: a quick probe checks it answers
    first, and when it does not, or when the online init fails anyway, the run is written
    offline (for `wandb sync`), as are the later runs of the process, without waiting again."""

    # A sweep compares jobs in W&B: a job that failed before training still shows there.
    records_failed_jobs = True

    def __init__(self, cfg, config: dict, run_dir: Path, run_id: str, run_name: str,
                 group: str | None, sync_hint: str | None = None):
        self.run = self.failed_run = None
        self.run_id = run_id
        self.mode = None  # the mode the run uses, once started
        os.environ["WANDB_DATA_DIR"] = str(run_dir / "wandb")  # artifact staging, not ~
        try:
            self.run, self.mode, _ = wandb_env.start_run(
                value(cfg.mode), sync_hint=sync_hint,
                project=cfg.project, entity=cfg.entity, group=group, tags=list(cfg.tags),
                name=run_name, job_type=cfg.job_type, dir=str(run_dir), id=run_id,
                resume="allow", config=config)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B init failed (%s: %s); training goes on without W&B.",
                        type(e).__name__, e)
            return
        # W&B decides the ID in a W&B sweep (WANDB_RUN_ID): report the one it uses.
        self.run_id = getattr(self.run, "id", None) or self.run_id
        self._define_metrics()
        self._keep_shadowed_config(config)

    @_guarded
    def _define_metrics(self) -> None:
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def _keep_shadowed_config(self, config: dict) -> None:
        """In a W&B sweep, W&B sets each sweep parameter as a config key and locks it: the
        parameter `model` (the Hydra config group, `model=standard`) replaces the resolved
        `model` section with the option's name. The section is kept as `model_config`."""
        try:
            logged = self.run.config
            shadowed = {f"{key}_config": section for key, section in config.items()
                        if isinstance(section, dict) and not isinstance(logged.get(key), dict)}
            if shadowed:
                logged.update(shadowed, allow_val_change=True)
        except Exception as e:  # noqa: BLE001 - only a copy
            log.debug("could not check the W&B config: %s: %s", type(e).__name__, e)

    @_guarded
    def log_metrics(self, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None})

    # Tables and images are logged with commit=False: they join the next epoch's history row
    # (or, logged after the last epoch, a row of their own when the run finishes) instead of
    # adding a row with no epoch, so W&B's history keeps one row per epoch, as metrics.jsonl.

    @_guarded
    def log_model_table(self, report) -> None:
        """The per-layer table printed at the start of the run, as a W&B table."""
        import wandb

        columns = ["name", "type", "kernel", "output", "params", "MACs"]
        rows = [[layer.name or "(model)", layer.type, layer.detail,
                 str(tuple(layer.output_shape)), layer.params, layer.macs]
                for layer in report.layers]
        self.run.log({"model/layers": wandb.Table(columns=columns, data=rows)}, commit=False)

    @_guarded
    def log_images(self, images: dict[str, Path]) -> None:
        """Image files (PNG, JPEG...), one W&B image each, under their key."""
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()},
                     commit=False)

    @_guarded
    def update_summary(self, values: dict[str, Any]) -> None:
        """Results only: the keys of CONFIG_KEYS are in the run's config (`wandb_config`)."""
        self.run.summary.update({k: v for k, v in values.items() if k not in CONFIG_KEYS})

    @_guarded
    def log_model(self, path: Path, name: str, metadata: dict) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["final"])

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run, also after a failed call stopped the logging: an unfinished run
        would be returned again by the next wandb.init in this process."""
        run = self.run or self.failed_run
        self.run = self.failed_run = None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(e).__name__, e)


def build_logger(cfg, config: dict, run_dir: Path, run_id: str, run_name: str,
                 group: str | None, sync_hint: str | None = None):
    """The configured logger. `sync_hint`: what `wandb sync` should be given to upload this
    run if it is offline (a sweep's jobs share one, so the line is said once per sweep)."""
    if value(cfg.get("mode")) == "disabled":
        return NullLogger()
    return LOGGERS.build(cfg.name, cfg, config, run_dir, run_id, run_name, group,
                         sync_hint=sync_hint)
