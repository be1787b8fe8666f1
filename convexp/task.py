"""One job, from a composed config to its recorded result: `run` is Hydra's task function.

    run(cfg) -> mode=train:   validate, load data, build the model, train, test, record
                mode=summary: print the model's per-layer table
                mode=export:  write ONNX from a checkpoint

Every training job leaves a `summary.json` (convexp.job) and finishes its logger, whatever
happens; a resumed job runs the config its checkpoint recorded (see `resume_config`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from convexp import wandb_env
from convexp.analysis import effective_receptive_field, inference_latency_ms
from convexp.auto import resolve_auto
from convexp.checkpoint import TRUST_OPTION, check_trusted, load_checkpoint, resolve_checkpoint
from convexp.data import DATASETS, dataset_image_shape, load_dataset
from convexp.erf_maps import erf_stats, save_erf_png
from convexp.errors import ConfigError, ConvexpError
from convexp.export import export_onnx
from convexp.introspect import describe_model
from convexp.job import (
    SUMMARY,
    Job,
    JobContext,
    JobExit,
    Stop,
    WriteFailed,
    check_writable,
    write_or_fail,
)
from convexp.loggers import LOGGERS, NullLogger, build_logger, wandb_config
from convexp.models import MODELS, build_model, is_builtin
from convexp.naming import config_label, run_name, sweep_group, sweep_tag, sync_glob
from convexp.optim import OPTIMIZERS, SCHEDULERS
from convexp.record import (
    INPUT_SHAPE,
    OBJECTIVE,
    OBJECTIVE_VALUE,
    RECIPE,
    RF_HOLES_THEORY,
    WANDB_ONLINE_UNAVAILABLE,
    recipe_hash,
)
from convexp.runner import FitResult, Runner
from convexp.schema import to_container, to_schema, value
from convexp.signals import (
    SECOND_CTRL_C,
    first_signal,
    install_signal_handlers,
    stop_requested,
)
from convexp.system import select_device, set_threads, thread_budget
from convexp.validate import validate_config
from convexp.variants import variant_of

log = logging.getLogger("convexp")

REGISTRIES = {"model": MODELS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
              "data": DATASETS, "logger": LOGGERS}

# What a resumed run may change: how it reports and logs, not what it trains. Anything else
# that differs from the checkpoint's config is refused (exit 2). trainer.max_epochs may grow a
# run whose schedule has no fixed horizon (scheduler=none).
RESUME_MAY_CHANGE = ("trainer.progress", "trainer.progress_every_s", "trainer.threads",
                     "trainer.checkpoint", "logger", "hydra")
EXTENDS_RUN = "trainer.max_epochs"
_ABSENT = object()


def hydra_context() -> JobContext:
    """The current Hydra job's output dir, overrides and multirun facts."""
    if not HydraConfig.initialized():
        return JobContext()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    experiment = hc.runtime.choices.get("experiment")
    # W&B tags: the experiment and search presets a job came from, and its sweep.
    tags = [name for group in ("experiment", "hparams_search", "debug")
            if (name := hc.runtime.choices.get(group))]
    return JobContext(
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        multirun=multirun,
        sweep_name=sweep_group(hc.sweep.dir, experiment) if multirun else None,
        launcher=OmegaConf.to_container(hc.launcher, resolve=False) if multirun else None,
        job_num=hc.job.get("num") if multirun else None,
        tags=[*tags, sweep_tag(hc.sweep.dir, experiment)] if multirun else tags,
    )


def run(cfg: DictConfig, ctx: JobContext | None = None) -> float:
    """The Hydra task function: returns the validation objective for sweepers (NaN when the
    job did not complete, so a sweep keeps going)."""
    ctx = ctx if ctx is not None else hydra_context()
    job = {"summary": _print_summary, "export": _export}.get(value(cfg.mode), _train)
    with _job_log_prefix(ctx.job_num):
        return _report_errors(job, cfg, ctx)


@contextlib.contextmanager
def _job_log_prefix(job_num: int | None):
    """In a sweep, every log line of a job says which job it is: jobs running side by side
    (joblib, submitit_local) write to one terminal. Also routes records marked
    `extra={"console": False}` to the log file only, and `{"logfile": False}` to the console
    only."""
    prefix = f"[job {job_num}] " if job_num is not None else ""

    def route(handler: logging.Handler):
        to_file = isinstance(handler, logging.FileHandler)

        def keep(record: logging.LogRecord) -> bool:
            if not getattr(record, "logfile" if to_file else "console", True):
                return False
            if prefix and not str(record.msg).startswith(prefix):
                record.msg = prefix + str(record.msg)
            return True

        return keep

    # The root logger's handlers (Hydra's console and job log file), and the handler the
    # Python API puts on the `convexp` logger when the caller configured no logging.
    handlers = [*logging.getLogger().handlers, *logging.getLogger("convexp").handlers]
    filters = [(handler, route(handler)) for handler in dict.fromkeys(handlers)]
    for handler, keep in filters:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler, keep in filters:
            handler.removeFilter(keep)


def _report_errors(job, cfg, ctx: JobContext) -> float:
    try:
        return job(cfg, ctx)
    except ConvexpError as e:
        if ctx.multirun:
            log.error("job failed: %s", e)
            return math.nan
        if not ctx.exit_on_failure:
            raise  # the Python API: the caller gets the exception, not SystemExit
        print(f"convexp: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Stop as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:  # a second Ctrl-C (convexp.signals): recorded, now one line
        print(f"convexp: {SECOND_CTRL_C}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except JobExit as e:  # recorded already, e.g. a diverged run
        if ctx.multirun or not ctx.exit_on_failure:
            return math.nan
        print(f"convexp: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except Exception:
        if ctx.multirun:
            log.exception("job failed")
            return math.nan
        raise


# --- mode=summary and mode=export ---------------------------------------------------------


def _print_summary(cfg, ctx: JobContext) -> float:
    validate_config(cfg, REGISTRIES)
    report, ratios = describe_model(cfg.model, dataset_image_shape(cfg.data))
    print(f"{cfg.model.name}: {_model_caption(cfg.model, report.input_shape)}")
    print(report.format_table())
    for key, ratio in ratios.items():
        print(f"{key.replace('_', ' ').replace(' vs ', ' vs. ')}: {ratio:.3f}")
    return math.nan


# What mode=export reads from the command line: the checkpoint's own config gives the rest.
# `model=NAME` may name the checkpoint's `_target_` (your own model's config) to trust it.
EXPORT_READS = ("mode", "checkpoint", TRUST_OPTION, "model", "model._target_")


def _export(cfg, ctx: JobContext) -> float:
    if cfg.checkpoint is None:
        raise ConfigError("mode=export needs checkpoint=<run dir or checkpoint file>")
    ignored = [o for o in ctx.overrides
               if _override_key(o) not in EXPORT_READS and not _override_key(o).startswith(
                   ("hydra.", "hydra/"))]
    if ignored:
        raise ConfigError(
            f"mode=export exports the model its checkpoint recorded, with that checkpoint's "
            f"config: {', '.join(ignored)} would change nothing. Drop "
            f"{'it' if len(ignored) == 1 else 'them'}; to export another model, train it and "
            "export its checkpoint")
    source = resolve_checkpoint(cfg.checkpoint)
    # Beside the checkpoint's run dir (run/checkpoints/last.pt -> run/model.onnx), where the
    # rest of that run's results are.
    out_dir = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    check_writable(out_dir)
    path = export_onnx(source, out_dir / "model.onnx", named_target=cfg.model.get("_target_"),
                       trust=bool(cfg.trust_checkpoint))
    print(f"wrote {path} (open it in Netron: https://netron.app)")
    return math.nan


def _model_caption(m, image_shape) -> str:
    shape = "x".join(map(str, image_shape))
    if not is_builtin(m) or m.get("kernel_size") is None:  # book_cnn, a `_target_` model
        return f"input {shape}"
    return (f"kernel {m.kernel_size}, dilation {m.dilation}, channels {list(m.channels)}, "
            f"padding {value(m.padding)}, input {shape}")


# --- resume ---------------------------------------------------------------------------------


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _plain(node):
    """A config value as plain Python, for comparing a checkpoint's value with an override's."""
    if isinstance(node, DictConfig):
        return to_container(node)
    return OmegaConf.to_container(node) if OmegaConf.is_list(node) else value(node)


def _allowed_on_resume(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def resume_config(cli_cfg, ctx: JobContext) -> tuple[DictConfig, dict, list[str]]:
    """The config a resumed run trains: the checkpoint's own, with only the overrides that do
    not change what it trains (RESUME_MAY_CHANGE) applied. Returns it, the checkpoint and the
    overrides to record (the original run's, so compare pools the job with its seeds)."""
    ckpt = load_checkpoint(cli_cfg.resume)
    check_trusted(ckpt, resolve_checkpoint(cli_cfg.resume), cli_cfg.model.get("_target_"),
                  bool(cli_cfg.trust_checkpoint))
    resumed = to_schema(ckpt["config"])
    problems, recorded = [], list(ckpt.get("overrides", []))
    for override in ctx.overrides:
        key = _override_key(override)
        if key in ("resume", TRUST_OPTION) or key.startswith("hydra/"):
            continue
        if OmegaConf.select(cli_cfg, key, default=_ABSENT) is _ABSENT:
            # A preset such as debug=fast or experiment=...: it sets other keys, so it
            # changes what the checkpoint trains unless the original run was given it too.
            if override not in recorded:
                problems.append(f"{override} (a preset the checkpoint's run was not given)")
            continue
        new = OmegaConf.select(cli_cfg, key, default=None)
        if _allowed_on_resume(key) and not key.startswith("hydra"):
            OmegaConf.update(resumed, key, new, merge=False, force_add=True)
            continue
        old = OmegaConf.select(resumed, key, default=None)
        if _plain(new) == _plain(old):
            continue
        growing = isinstance(new, int) and isinstance(old, int) and new > old
        if key == EXTENDS_RUN and resumed.scheduler.name == "none" and growing:
            resumed.trainer.max_epochs = new
            recorded = [o for o in recorded if _override_key(o) != key] + [override]
            continue
        why = ""
        if key == EXTENDS_RUN and resumed.scheduler.name != "none":
            why = (f" (scheduler={resumed.scheduler.name} spans the original "
                   f"{resumed.trainer.max_epochs} epochs)")
        elif key == EXTENDS_RUN:  # a run can grow, not shrink: its epochs are trained already
            why = " (a resumed run may train more epochs, never fewer)"
        problems.append(f"{override} (the checkpoint has {key}={_plain(old)!r}){why}")
    if problems:
        raise ConfigError(
            f"resume={cli_cfg.resume} runs the config its checkpoint recorded; these overrides "
            f"would change what it trains: {'; '.join(problems)}. Only "
            f"{', '.join(RESUME_MAY_CHANGE[:-1])} and trainer.max_epochs (with scheduler=none) "
            "may change; start a new run for anything else")
    resumed.resume = cli_cfg.resume
    return resumed, ckpt, recorded


def resume_output_dir(resume: str, fallback: Path) -> Path:
    """A resumed run continues in the run dir of its checkpoint (run/checkpoints/last.pt)."""
    ckpt = resolve_checkpoint(resume)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else fallback


def _already_completed(out_dir: Path, ckpt: dict, cfg) -> bool:
    summary = out_dir / SUMMARY
    try:
        status = json.loads(summary.read_text()).get("status")
    except (OSError, ValueError):
        status = None
    return status == "completed" and ckpt["progress"]["epoch"] >= cfg.trainer.max_epochs


# --- mode=train -----------------------------------------------------------------------------


def _summary_fields(cfg, ctx: JobContext) -> dict:
    """What identifies the job in summary.json and W&B: only the fields its model has, and
    the W&B group it logs into (the report logs into the same, convexp.naming)."""
    m = cfg.model
    fields = {"model": m.name, "variant": variant_of(m.name, m.get("dilation"))}
    for key in ("kernel_size", "dilation", "channels", "padding"):
        if key in m:  # channels, and a dilation schedule (one per block), as lists
            fields[key] = list(m[key]) if OmegaConf.is_list(m[key]) else value(m[key])
    return {**fields, "seed": cfg.seed, "wandb_group": _wandb_group(cfg, ctx),
            RECIPE: _recipe(cfg)}


def _recipe(cfg) -> str | None:
    """The job's recipe (convexp.record.recipe_hash); None when its config does not resolve,
    which fails the job with its own reason right after."""
    try:
        return recipe_hash(to_container(cfg))
    except (OmegaConfBaseException, ValueError):
        return None


def _wandb_group(cfg, ctx: JobContext) -> str | None:
    """`logger.group`, else the sweep's group (convexp.naming.sweep_group)."""
    return cfg.logger.get("group") or ctx.sweep_name


def _start_logger(job: Job, cfg, resolved: dict):
    """The job's logger (its W&B run, named for the built variant, in the job's group); with
    W&B, summary.json records why online W&B was unavailable, for the sweep's report."""
    ctx = job.ctx
    logger = build_logger(
        cfg.logger, wandb_config(resolved, job.summary), job.out_dir, job.run_id,
        cfg.logger.get("run_name") or run_name(job.summary), job.summary.get("wandb_group"),
        sync_hint=sync_glob(Path(ctx.output_dir).parent) if ctx.multirun else None)
    if logger.mode is not None and wandb_env.online_unavailable() is not None:
        job.summary[WANDB_ONLINE_UNAVAILABLE] = wandb_env.online_unavailable()
    return logger


def _train(cfg, ctx: JobContext) -> float:
    ckpt, overrides, out_dir = None, list(ctx.overrides), Path(ctx.output_dir)
    if cfg.resume is not None:
        cfg, ckpt, overrides = resume_config(cfg, ctx)
        out_dir = resume_output_dir(cfg.resume, out_dir)
        if _already_completed(out_dir, ckpt, cfg):
            print(f"convexp: {out_dir} already completed its {ckpt['progress']['epoch']} "
                  f"epochs: nothing to resume (its results are in {out_dir / SUMMARY})")
            return math.nan
        log.info("resuming %s (epoch %d, step %d) with the config its checkpoint recorded",
                 out_dir, ckpt["progress"]["epoch"], ckpt["progress"]["global_step"])
    if "tags" in cfg.logger:  # also on the W&B run of a job that fails before training
        cfg.logger.tags = list(dict.fromkeys([*cfg.logger.tags, *ctx.tags]))
    # A W&B Sweep agent chooses the run id (WANDB_RUN_ID) and W&B ignores the one passed.
    sweep_run_id = (os.environ.get("WANDB_RUN_ID")
                    if os.environ.get("WANDB_SWEEP_ID") and not ctx.multirun else None)
    job = Job(ctx, out_dir, {**_summary_fields(cfg, ctx), "overrides": overrides},
              run_id=(ckpt or {}).get("wandb_run_id") or sweep_run_id,
              resuming=ckpt is not None)
    install_signal_handlers()
    runner = None
    try:
        validate_config(cfg, REGISTRIES)
        runner = _setup(cfg, ctx, job, ckpt, overrides)
        job.summary["setup_s"] = round(time.time() - job.started, 3)
        if stop_requested():
            raise Stop(first_signal())
        return _finish(job, runner, runner.fit())
    except BaseException as e:
        if not job.finished:
            _record_failure(job, cfg, e, runner)
        raise
    finally:
        job.release_reserve()


# The model configs whose per-layer table this process showed on the console already.
_TABLES_SHOWN: set[str] = set()


def _setup(cfg, ctx: JobContext, job: Job, ckpt: dict | None, overrides: list[str]) -> Runner:
    """Everything between a valid config and the first step: data, model, runner, logger."""
    device = select_device(value(cfg.trainer.device))
    set_threads(thread_budget(cfg.trainer.threads, ctx.launcher))
    data = load_dataset(cfg.data, cfg.seed)
    torch.compiler.reset()  # a fresh dynamo cache per job: no recompile-limit fallbacks
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.image_shape, data.num_classes)
    # Describing builds the standard net too: training starts from the RNG state that
    # building this model left, as if nothing else had been built.
    rng = torch.get_rng_state()
    report, ratios = describe_model(cfg.model, data.image_shape, data.num_classes, model)
    torch.set_rng_state(rng)
    # A resumed run keeps the precision it started with (the checkpoint's config holds the
    # resolved one, never `auto`).
    auto = resolve_auto(cfg.trainer, device, model)
    cfg.trainer.precision = auto.precision
    # A sweep shows each configuration's table once on the console, at its first job in this
    # process (a 16-job sweep printed 458 lines, mostly tables); every job's convexp.log and
    # W&B run still hold it.
    table_key = json.dumps(to_container(cfg.model), sort_keys=True, default=str)
    shown = {} if table_key not in _TABLES_SHOWN else {"extra": {"console": False}}
    _TABLES_SHOWN.add(table_key)
    log.info("%s\n%s\nprecision: %s\ncompile: %s", run_name(job.summary),
             report.format_table(), auto.precision_why, auto.compile_why, **shown)
    if shown:
        log.info("%s (per-layer table as above)\nprecision: %s\ncompile: %s",
                 run_name(job.summary), auto.precision_why, auto.compile_why,
                 extra={"logfile": False})
    resolved = to_container(cfg)
    job.summary.update(
        params=report.params, macs=report.macs, receptive_field=report.receptive_field,
        **{RF_HOLES_THEORY: report.rf_holes_theory, INPUT_SHAPE: list(data.image_shape)},
        **ratios, device=str(device),
        precision=auto.precision,
        threads=torch.get_num_threads(), wandb_run_id=job.run_id,
    )

    def on_epoch(metrics: dict) -> None:
        job.write_metrics(runner.progress.history)
        job.logger.log_metrics(metrics)
        log.info(_epoch_line(metrics, cfg.trainer.max_epochs))

    runner = Runner(
        cfg, model, data, device, job.out_dir, precision=auto.precision,
        compile=auto.compile, on_epoch=on_epoch,
        should_stop=stop_requested,
        checkpoint_extra=lambda: {"config": resolved, "overrides": overrides,
                                  "wandb_run_id": job.run_id,
                                  "image_shape": list(data.image_shape),
                                  "num_classes": data.num_classes},
    )
    if ckpt is not None:
        runner.load_state_dict(ckpt)
        job.summary["resumed_from_epoch"] = ckpt["progress"]["epoch"]
    job.summary.update(compiled=runner.compiled)
    job.write_summary()
    job.logger = _start_logger(job, cfg, resolved)
    job.logger.log_model_table(report)
    return runner


def _progress_values(runner: Runner | None) -> dict:
    if runner is None:
        return {}
    p = runner.progress
    return {"epochs_completed": p.epoch, "steps": p.global_step,
            "best_val_acc": p.best_val_acc, "train_time_s": round(p.train_time_s, 3)}


def _record_failure(job: Job, cfg, error: BaseException, runner: Runner | None) -> None:
    """Record a job that ended by an exception: summary.json, and its logger's run."""
    if isinstance(error, Stop):
        status, reason = "interrupted", "stopped by a signal before training"
    elif isinstance(error, KeyboardInterrupt):
        status, reason = "interrupted", "stopped by a second Ctrl-C"
    elif isinstance(error, WriteFailed):
        status, reason = "failed", error.reason
    elif isinstance(error, ConvexpError):
        status, reason = "failed", str(error)
    else:
        status, reason = "failed", f"{type(error).__name__}: {error}"
    try:
        job.write_summary(final=True, status=status, reason=reason, **_progress_values(runner))
    except WriteFailed as write_error:  # e.g. the output dir itself is the problem
        log.warning("%s", write_error.reason)
    if job.logger is None and job.ctx.multirun:
        logger_cls = LOGGERS.get(cfg.logger.name) if cfg.logger.name in LOGGERS else None
        if logger_cls is not None and logger_cls.records_failed_jobs:
            # A sweep compares jobs in W&B: a job that failed before training shows there.
            try:
                job.logger = _start_logger(job, cfg, to_container(cfg))
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


def _finish(job: Job, runner: Runner, result: FitResult) -> float:
    p = result.progress
    history = p.history
    last = history[-1] if history else {}
    values = {
        "status": result.status, "reason": result.reason, **_progress_values(runner),
        "final_val_acc": last.get("val_acc"), "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "train_samples_per_s": _overall_rate(history),
        "test_loss": None, "test_acc": None, "compiled": runner.ran_compiled,
    }
    failure = None
    if result.status == "completed":
        started = time.perf_counter()
        values["test_loss"], values["test_acc"] = runner.evaluate(runner.data.test)
        values["test_s"] = round(time.perf_counter() - started, 3)
        log.info("test accuracy %s on %d images", values["test_acc"],
                 len(runner.data.test) if runner.data.test is not None else 0)
        started = time.perf_counter()
        try:
            values.update(_analyse(job, runner))
        except WriteFailed as e:
            failure = e
        values["analysis_s"] = round(time.perf_counter() - started, 3)
    # The metric the sweep maximises, and its value: the report ranks on it, not on test_acc.
    objective = value(runner.cfg.objective)
    values.update({OBJECTIVE: objective, OBJECTIVE_VALUE: {**job.summary, **values}.get(objective)})
    if failure is None:
        try:
            job.write_metrics(history)
        except WriteFailed as e:
            failure = e
    if failure is not None:  # a full disk: recorded as failed, with the file and the cause
        first = f"{values['reason']}; then " if values["reason"] else ""
        values.update(status="failed", reason=first + failure.reason)
    job.write_summary(final=True, **values)
    logged = {k: v for k, v in values.items() if k != "reason" or v is not None}
    job.logger.update_summary(logged)
    ckpt = job.out_dir / "checkpoints" / "last.pt"
    cfg = runner.cfg
    if result.status == "completed" and cfg.logger.get("log_model") and ckpt.is_file():
        job.logger.log_model(ckpt, f"model-{job.run_id}", {
            k: job.summary.get(k) for k in ("variant", "params", "macs", "test_acc")})
    if failure is not None:
        job.logger.finish(exit_code=1)
        raise failure
    if result.status != "completed":
        log.warning("job %s: %s", result.status, result.reason)
    job.logger.finish(exit_code=0 if result.status == "completed" else 1)
    if result.status == "interrupted":
        raise Stop(first_signal())
    if result.status in ("diverged", "failed"):
        raise JobExit(1, f"run {result.status}: {result.reason} (see {job.out_dir / SUMMARY})")
    objective = job.summary.get(OBJECTIVE_VALUE)
    return float(objective) if isinstance(objective, (int, float)) else math.nan


ERF_IMAGES = 256  # test images the effective receptive field is averaged over (~1 s on CPU)


def _analyse(job: Job, runner: Runner) -> dict:
    """What the trained model costs and sees: inference latency per image on this machine,
    and its effective receptive field (Luo et al. 2016), saved as erf.npy and erf.png beside
    the summary for `python -m convexp.compare`. A failure here is logged, never fatal."""
    values = {}
    try:
        values["inference_ms_per_image"] = round(inference_latency_ms(
            runner.model, runner.data.image_shape, runner.device), 5)
        split = runner.data.test or runner.data.val or runner.data.train
        images = runner.inputs(split.images[:ERF_IMAGES])
        erf = effective_receptive_field(runner.model, images)
        rf = job.summary.get("receptive_field")
        write_or_fail(job.out_dir / "erf.npy", lambda: np.save(job.out_dir / "erf.npy", erf))
        title = config_label(job.summary["variant"], job.summary.get("kernel_size"),
                             job.summary.get("dilation"))
        write_or_fail(job.out_dir / "erf.png", lambda: save_erf_png(
            erf, job.out_dir / "erf.png", title, rf=rf))
        stats = erf_stats(erf, rf)
        values.update(erf_npy="erf.npy", erf_png="erf.png", erf_95=stats["erf_95"],
                      erf_rf_holes=stats.get("rf_holes"))
        job.logger.log_images({"erf": job.out_dir / "erf.png"})
    except WriteFailed:  # a full disk fails the run, as any write of its results does
        raise
    except Exception as e:  # noqa: BLE001 - the run's own results are complete
        log.warning("model analysis (latency, receptive field) failed: %s: %s",
                    type(e).__name__, e)
    return values


def _overall_rate(history: list[dict]) -> float | None:
    """Training samples per second over all epochs but the first (compile and warm-up)
    when there are several, else over the only one."""
    timed = history[1:] if len(history) > 1 else history
    seconds = sum(m["epoch_time_s"] for m in timed)
    samples = sum(m["train_samples_per_s"] * m["epoch_time_s"] for m in timed
                  if m["train_samples_per_s"])
    return round(samples / seconds, 1) if seconds > 0 else None
