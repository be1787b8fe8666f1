"""Experiment loggers, registered by name with their schema: adding one is a class here (or in
any imported module) plus `conf/logger/<name>.yaml`. A logger failure is reported once and then
ignored: it never stops a run nor touches the run's local files (metrics.jsonl, summary.json,
checkpoints)."""

from __future__ import annotations

import functools
import logging
import netrc
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from convexp.registry import Registry
from convexp.schema import LoggerConfig, value

log = logging.getLogger(__name__)

LOGGERS: Registry = Registry("logger")


@dataclass
class NoLoggerConfig(LoggerConfig):
    name: str = "none"


class WandbMode(str, Enum):
    auto = "auto"  # online with W&B credentials (or WANDB_MODE), offline without
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbConfig(LoggerConfig):
    name: str = "wandb"
    project: str = "convexp"
    entity: str | None = None
    group: str | None = None  # null: the sweep's name in a multirun
    tags: list[str] = field(default_factory=list)
    run_name: str | None = None  # null: from the config, e.g. "depthwise_dilated k5 d2 s1"
    job_type: str = "train"
    mode: WandbMode = WandbMode.auto
    log_model: bool = True  # upload the final checkpoint as a model artifact


@LOGGERS.register("none", schema=NoLoggerConfig)
class NullLogger:
    """No experiment tracking: the run's local files are the record."""

    records_failed_jobs = False

    def __init__(self, cfg=None, config=None, run_dir=None, run_id=None, run_name=None,
                 group=None):
        pass

    run_id: str | None = None

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


def wandb_credentials_exist() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """`auto`: WANDB_MODE when set, else online with credentials and offline without."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_credentials_exist() else "offline"


@LOGGERS.register("wandb", schema=WandbConfig)
class WandbLogger:
    """One W&B run per job. Metrics use `epoch` as their step metric."""

    # A sweep compares jobs in W&B: a job that failed before training still shows there.
    records_failed_jobs = True

    def __init__(self, cfg, config: dict, run_dir: Path, run_id: str, run_name: str,
                 group: str | None):
        self.run = self.failed_run = None
        self.run_id = run_id
        mode = resolve_mode(value(cfg.mode))
        os.environ["WANDB_DATA_DIR"] = str(run_dir / "wandb")  # artifact staging, not ~
        init = dict(
            project=cfg.project, entity=cfg.entity, group=group, tags=list(cfg.tags),
            name=run_name, job_type=cfg.job_type, dir=str(run_dir), id=run_id, resume="allow",
            config=config, reinit="finish_previous",
        )
        try:
            self.run = self._init(mode, init)
        except Exception as e:  # noqa: BLE001
            if mode != "online":
                log.warning("W&B init failed (%s: %s); training goes on without W&B.",
                            type(e).__name__, e)
                return
            log.warning("W&B online init failed (%s: %s); logging offline instead.",
                        type(e).__name__, e)
            mode = "offline"
            try:
                self.run = self._init(mode, init)
            except Exception as e2:  # noqa: BLE001
                log.warning("W&B offline init failed too (%s: %s); training goes on without "
                            "W&B.", type(e2).__name__, e2)
                return
        if mode == "offline":
            log.info("W&B is offline (no credentials or mode=offline); upload later with: "
                     "wandb sync %s", Path(self.run.dir).parent)

    @staticmethod
    def _init(mode: str, init: dict):
        import wandb

        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=30, silent=True), **init)
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        return run

    @_guarded
    def log_metrics(self, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None})

    @_guarded
    def log_model_table(self, report) -> None:
        """The per-layer table printed at the start of the run, as a W&B table."""
        import wandb

        columns = ["name", "type", "kernel", "output", "params", "MACs"]
        rows = [[layer.name or "(model)", layer.type, layer.detail,
                 str(tuple(layer.output_shape)), layer.params, layer.macs]
                for layer in report.layers]
        self.run.log({"model/layers": wandb.Table(columns=columns, data=rows)})

    @_guarded
    def log_images(self, images: dict[str, Path]) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})

    @_guarded
    def update_summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

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
                 group: str | None):
    if value(cfg.get("mode")) == "disabled":
        return NullLogger()
    return LOGGERS.build(cfg.name, cfg, config, run_dir, run_id, run_name, group)
