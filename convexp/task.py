"""One job: validate the config, load data, build the model, train, evaluate, record.

Every job leaves a `summary.json` with its status (completed | failed | diverged | interrupted)
in its output dir, and finishes its W&B run, whatever happens.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from convexp.atomic import (
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    finite_or_none,
)
from convexp.checkpoint import load_checkpoint
from convexp.errors import ConfigError, ConvexpError
from convexp.schema import Config

log = logging.getLogger("convexp")

SUMMARY, METRICS = "summary.json", "metrics.jsonl"


class JobExit(Exception):
    """Raised after a job has recorded everything, to end it with a non-zero exit code."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


class Stop(JobExit):
    """An interrupted job: ends the process (a sweep too) with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum, f"stopped by signal {signum}")


_signals_received: list[int] = []


def _on_signal(signum, frame):
    if _signals_received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _signals_received.append(signum)
    log.warning("signal %d received: stopping at the next step and saving a checkpoint", signum)


def install_signal_handlers() -> None:
    """SIGINT/SIGTERM ask the job to stop at the next step boundary, checkpoint and record
    `interrupted`. Installed as the process starts, so that a signal during setup is kept too."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: the launcher owns signals
            pass


def stop_requested() -> bool:
    return bool(_signals_received)


# --- context from Hydra -------------------------------------------------------------------


def hydra_context() -> dict[str, Any]:
    """Output dir, overrides and multirun facts of the current Hydra job (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = dict(hc.runtime.choices)
    multirun = hc.mode == RunMode.MULTIRUN
    launcher_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None)
    return {
        "output_dir": Path(hc.runtime.output_dir),
        "overrides": list(hc.overrides.task),
        "multirun": multirun,
        "sweep_name": _sweep_name(hc.sweep.dir, choices.get("experiment")) if multirun else None,
        "parallel_jobs": launcher_jobs if isinstance(launcher_jobs, int) else None,
    }


def _sweep_name(sweep_dir: str, experiment: str | None) -> str:
    parts = Path(sweep_dir).parts[-2:]
    return f"{experiment or 'sweep'}-{'_'.join(parts)}"


def run_name(cfg) -> str:
    m = cfg.model
    if m.kernel_size is None:
        return f"{m.name} s{cfg.seed}"
    return f"{m.name} k{m.kernel_size} d{m.dilation} s{cfg.seed}"


def to_schema(cfg) -> DictConfig:
    """A plain config (e.g. from a checkpoint) merged onto the typed schema."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    OmegaConf.set_readonly(merged, False)
    return merged


# --- the job --------------------------------------------------------------------------------


def run(cfg: DictConfig, ctx: dict[str, Any] | None = None) -> float:
    """The Hydra task function: returns the validation objective for sweepers (NaN when the
    job did not complete, so a sweep keeps going)."""
    ctx = ctx if ctx is not None else hydra_context()
    mode = getattr(cfg.mode, "value", cfg.mode)
    if mode == "summary":
        return _guard(cfg, ctx, _print_summary)
    if mode == "export":
        return _guard(cfg, ctx, _export)
    return _guard(cfg, ctx, _train)


def _guard(cfg, ctx, job) -> float:
    """Turn a user error into one message and a non-zero exit (or, in a multirun, a failed
    job that lets the sweep go on)."""
    try:
        return job(cfg, ctx)
    except ConvexpError as e:
        if ctx.get("multirun"):
            log.error("job failed: %s", e)
            return math.nan
        print(f"convexp: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Stop as e:
        raise SystemExit(e.exit_code) from None
    except JobExit as e:  # recorded already, e.g. a diverged run
        if ctx.get("multirun") or ctx.get("api"):
            return math.nan
        print(f"convexp: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except Exception:
        if ctx.get("multirun"):
            log.exception("job failed")
            return math.nan
        raise


def _print_summary(cfg, ctx) -> float:
    from convexp.validate import validate_config

    validate_config(cfg)
    report, ratios = _describe_model(cfg)
    print(f"{cfg.model.name}: {_model_caption(cfg)}")
    print(report.format_table())
    for key, value in ratios.items():
        if value is not None:
            print(f"{key.replace('_', ' ')}: {value:.3f}")
    return math.nan


def _export(cfg, ctx) -> float:
    from convexp.export import export_onnx

    if cfg.checkpoint is None:
        raise ConfigError("mode=export needs checkpoint=<run dir or checkpoint file>")
    out_dir = ctx.get("output_dir", Path("."))
    path = export_onnx(cfg.checkpoint, out_dir / "model.onnx")
    print(f"wrote {path} (open it in Netron: https://netron.app)")
    return math.nan


def _model_caption(cfg) -> str:
    m = cfg.model
    if m.kernel_size is None:
        return "the textbook network"
    return (f"kernel {m.kernel_size}, dilation {m.dilation}, channels {list(m.channels)}, "
            f"padding {getattr(m.padding, 'value', m.padding)}")


def _describe_model(cfg, image_shape=(1, 28, 28)):
    """The model's per-layer report and, for the variants, its params and MACs relative to
    the standard conv net with the same channels, kernel and dilation."""
    from convexp.introspect import describe
    from convexp.models import build_model

    model = build_model(cfg.model, in_channels=image_shape[0], image_size=image_shape[1])
    report = describe(model, image_shape)
    ratios = {"param_ratio_vs_standard": None, "macs_ratio_vs_standard": None}
    if cfg.model.kernel_size is not None:
        standard_cfg = OmegaConf.merge(cfg.model, {"name": "standard"})
        standard = describe(
            build_model(standard_cfg, in_channels=image_shape[0], image_size=image_shape[1]),
            image_shape,
        )
        ratios = {"param_ratio_vs_standard": report.params / standard.params,
                  "macs_ratio_vs_standard": report.macs / standard.macs}
    return report, ratios


class Job:
    """The state of one training job, so that every exit path can record it."""

    def __init__(self, cfg, ctx):
        from convexp.models import variant_of

        self.cfg, self.ctx = cfg, ctx
        self.started = time.time()
        self.out_dir = Path(ctx.get("output_dir") or Path("outputs") / "run")
        self.summary: dict[str, Any] = {
            "status": "failed", "reason": None, "model": cfg.model.name,
            "variant": variant_of(cfg.model.name, cfg.model.dilation),
            "kernel_size": cfg.model.kernel_size, "dilation": cfg.model.dilation,
            "channels": list(cfg.model.channels),
            "padding": getattr(cfg.model.padding, "value", cfg.model.padding),
            "seed": cfg.seed, "overrides": ctx.get("overrides", []),
            "output_dir": str(self.out_dir), "torch_version": torch.__version__,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.logger = None
        self.run_id = secrets.token_hex(4)

    def write_summary(self, **values) -> None:
        self.summary.update(values, wall_s=round(time.time() - self.started, 3))
        atomic_write_json(self.out_dir / SUMMARY, self.summary)

    def write_metrics(self, history: list[dict]) -> None:
        lines = (json.dumps(finite_or_none(m)) + "\n" for m in history)
        atomic_write_text(self.out_dir / METRICS, "".join(lines))


def _check_writable(out_dir: Path) -> None:
    try:
        ensure_writable_dir(out_dir)
    except OSError as e:
        raise ConfigError(f"output dir {out_dir} is not writable: {e.strerror or e}") from e


def _resume_config(cfg) -> tuple[DictConfig, dict]:
    ckpt = load_checkpoint(cfg.resume)
    resumed = to_schema(ckpt["config"])
    resumed.resume = cfg.resume
    log.info("resuming from %s (epoch %d, step %d); the run's config comes from the checkpoint",
             cfg.resume, ckpt["progress"]["epoch"], ckpt["progress"]["global_step"])
    return resumed, ckpt


def _set_threads(cfg, ctx) -> None:
    threads = cfg.trainer.threads
    jobs = ctx.get("parallel_jobs")
    if threads is None and jobs:
        # One CPU budget per parallel job, or jobs oversubscribe the cores.
        cpus = os.cpu_count() or 1
        jobs = jobs if jobs > 0 else max(1, cpus + 1 + jobs)  # joblib: -1 = all cores
        threads = max(1, cpus // jobs)
    if threads is not None:
        torch.set_num_threads(threads)


def _train(cfg, ctx) -> float:
    from convexp.data import load_dataset
    from convexp.loggers import build_logger
    from convexp.models import build_model
    from convexp.runner import Runner, select_device
    from convexp.validate import validate_config

    ckpt = None
    if cfg.resume is not None:
        cfg, ckpt = _resume_config(cfg)
    job = Job(cfg, ctx)
    install_signal_handlers()
    try:
        _check_writable(job.out_dir)
        validate_config(cfg)
        device = select_device(cfg.trainer.device)
        _set_threads(cfg, ctx)
        torch.manual_seed(cfg.seed)
        data = load_dataset(cfg.data, cfg.seed)
        image_shape = tuple(data.train.images.shape[1:])
        report, ratios = _describe_model(cfg, image_shape)
        torch.compiler.reset()  # a fresh dynamo cache per job: no recompile-limit fallbacks
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, in_channels=image_shape[0], image_size=image_shape[1])
        log.info("%s\n%s", run_name(cfg), report.format_table())
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if ckpt is not None:
            job.run_id = ckpt.get("wandb_run_id") or job.run_id
        job.summary.update(
            params=report.params,
            macs=report.macs, receptive_field=report.receptive_field, **ratios,
            device=str(device), wandb_run_id=job.run_id,
        )
        runner = Runner(
            cfg, model, data, device, job.out_dir, should_stop=stop_requested,
            checkpoint_extra=lambda: {"config": resolved, "wandb_run_id": job.run_id,
                                      "image_shape": list(image_shape)},
        )
        if ckpt is not None:
            runner.load_state_dict(ckpt)
        job.summary.update(compiled=runner.compiled)
        top_level = {k: job.summary[k] for k in (
            "variant", "kernel_size", "dilation", "seed", "params", "macs", "receptive_field")}
        job.logger = build_logger(
            cfg.logger, {**resolved, **top_level}, job.out_dir, job.run_id, run_name(cfg)
            if cfg.logger.run_name is None else cfg.logger.run_name,
            cfg.logger.group or ctx.get("sweep_name"),
        )
        job.logger.update_summary({**top_level, **ratios})

        def on_epoch(metrics: dict) -> None:
            job.write_metrics(runner.progress.history)
            job.logger.log_metrics(metrics)
            log.info(_epoch_line(metrics, cfg.trainer.max_epochs))

        runner.on_epoch = on_epoch
        if stop_requested():
            job.write_summary(status="interrupted", reason="stopped by a signal before training")
            _record_failure(job, cfg, ctx, "interrupted", "stopped by a signal before training")
            raise Stop(_signals_received[0])
        result = runner.fit()
        return _finish(job, runner, result)
    except BaseException as e:
        if not isinstance(e, JobExit):
            reason = str(e) if isinstance(e, ConvexpError) else f"{type(e).__name__}: {e}"
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            try:
                job.write_summary(status=status, reason=reason)
            except OSError as write_error:  # e.g. the output dir itself is the problem
                log.warning("could not write %s: %s", job.out_dir / SUMMARY, write_error)
            _record_failure(job, cfg, ctx, status, reason)
        raise


def _record_failure(job: Job, cfg, ctx, status: str, reason: str) -> None:
    from convexp.loggers import NullLogger, build_logger

    if job.logger is None and ctx.get("multirun") and cfg.logger.name == "wandb":
        # A sweep compares jobs in W&B: a job that failed before training still shows there.
        top_level = {k: job.summary.get(k) for k in ("variant", "kernel_size", "dilation", "seed")}
        try:
            job.logger = build_logger(
                cfg.logger,
                {**OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), **top_level},
                job.out_dir, job.run_id, run_name(cfg), cfg.logger.group or ctx.get("sweep_name"),
            )
            job.logger.update_summary(top_level)
        except ConvexpError:
            job.logger = NullLogger()
    if job.logger is not None:
        job.logger.update_summary({"status": status, "reason": reason})
        job.logger.finish(exit_code=1)


def _epoch_line(m: dict, max_epochs: int) -> str:
    val = "" if m["val_acc"] is None else f"  val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}"
    return (f"epoch {m['epoch']}/{max_epochs}  train loss {m['train_loss']:.4f} "
            f"acc {m['train_acc']:.4f}{val}  {m['epoch_time_s']:.1f}s "
            f"{m['train_samples_per_s']:.0f} samples/s")


def _finish(job: Job, runner, result) -> float:
    p = result.progress
    history = p.history
    last = history[-1] if history else {}
    values = {
        "status": result.status, "reason": result.reason,
        "best_val_acc": p.best_val_acc, "final_val_acc": last.get("val_acc"),
        "final_train_loss": last.get("train_loss"), "final_train_acc": last.get("train_acc"),
        "epochs_completed": p.epoch, "steps": p.global_step,
        "train_time_s": round(p.train_time_s, 3),
        "train_samples_per_s": _overall_rate(history),
        "test_loss": None, "test_acc": None, "compiled": runner.ran_compiled,
    }
    if result.status == "completed":
        values["test_loss"], values["test_acc"] = runner.evaluate(runner.data.test)
        log.info("test accuracy %s on %d images", values["test_acc"],
                 len(runner.data.test) if runner.data.test is not None else 0)
    job.write_metrics(history)
    job.write_summary(**values)
    logged = {k: v for k, v in values.items() if k not in ("reason",) or v is not None}
    job.logger.update_summary(logged)
    ckpt = job.out_dir / "checkpoints" / "last.pt"
    if result.status == "completed" and job.cfg.logger.log_model and ckpt.is_file():
        job.logger.log_model(ckpt, f"model-{job.run_id}", {
            k: job.summary.get(k) for k in ("variant", "params", "macs", "test_acc")})
    if result.status != "completed":
        log.warning("job %s: %s", result.status, result.reason)
    job.logger.finish(exit_code=0 if result.status == "completed" else 1)
    if result.status == "interrupted":
        raise Stop(_signals_received[0] if _signals_received else signal.SIGINT)
    if result.status == "diverged":
        raise JobExit(1, f"run diverged: {result.reason} (see {job.out_dir / SUMMARY})")
    objective = job.summary.get(job.cfg.objective)
    return float(objective) if isinstance(objective, (int, float)) else math.nan


def _overall_rate(history: list[dict]) -> float | None:
    """Training samples per second over all epochs but the first (compile and warm-up)
    when there are several, else over the only one."""
    timed = history[1:] if len(history) > 1 else history
    seconds = sum(m["epoch_time_s"] for m in timed)
    samples = sum(m["train_samples_per_s"] * m["epoch_time_s"] for m in timed
                  if m["train_samples_per_s"])
    return round(samples / seconds, 1) if seconds > 0 else None
