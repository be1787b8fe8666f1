"""Range and consistency checks the typed schema cannot express, run before any work."""

from __future__ import annotations

import math

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from convexp.errors import ConfigError


def _checks(cfg):
    m, o, d, t = cfg.model, cfg.optimizer, cfg.data, cfg.trainer
    yield "optimizer.lr", o.lr, 0 < o.lr < math.inf, "must be > 0 and finite"
    yield "optimizer.weight_decay", o.weight_decay, o.weight_decay >= 0, "must be >= 0"
    yield "optimizer.momentum", o.momentum, 0 <= o.momentum < 1, "must lie in [0, 1)"
    nesterov_ok = not (o.name == "sgd" and o.nesterov and o.momentum <= 0)
    yield "optimizer.nesterov", o.nesterov, nesterov_ok, "needs optimizer.momentum > 0"
    betas_ok = len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas)
    yield "optimizer.betas", list(o.betas), betas_ok, "must be two numbers in [0, 1)"
    yield "optimizer.eps", o.eps, o.eps >= 0, "must be >= 0"
    s = cfg.scheduler
    if s.name == "onecycle":
        yield "scheduler.pct_start", s.pct_start, 0 < s.pct_start < 1, "must lie in (0, 1)"
        yield "scheduler.div_factor", s.div_factor, s.div_factor > 0, "must be > 0"
        yield ("scheduler.final_div_factor", s.final_div_factor, s.final_div_factor > 0,
               "must be > 0")
    if s.name == "cosine":
        yield "scheduler.min_lr", s.min_lr, s.min_lr >= 0, "must be >= 0"
        yield "scheduler.warmup_steps", s.warmup_steps, s.warmup_steps >= 0, "must be >= 0"
    yield "data.batch_size", d.batch_size, d.batch_size > 0, "must be > 0"
    yield "data.eval_batch_size", d.eval_batch_size, d.eval_batch_size > 0, "must be > 0"
    yield "data.val_size", d.val_size, d.val_size >= 0, "must be >= 0"
    if d.train_size is not None:
        yield "data.train_size", d.train_size, d.train_size > 0, "must be > 0 (or null: all)"
    if d.test_size is not None:
        yield "data.test_size", d.test_size, d.test_size > 0, "must be > 0 (or null: all)"
    yield "data.random_shift", d.random_shift, d.random_shift >= 0, "must be >= 0"
    yield "data.std", d.std, d.std > 0, "must be > 0"
    yield "trainer.max_epochs", t.max_epochs, t.max_epochs > 0, "must be > 0"
    if t.max_steps is not None:
        yield "trainer.max_steps", t.max_steps, t.max_steps > 0, "must be > 0 (or null: no cap)"
    yield ("trainer.finite_check_every", t.finite_check_every, t.finite_check_every > 0,
           "must be > 0")
    if t.threads is not None:
        yield "trainer.threads", t.threads, t.threads > 0, "must be > 0 (or null: default)"
    yield "model.channels", list(m.channels), all(c > 0 for c in m.channels), "must all be > 0"
    if m.kernel_size is not None:
        yield "model.kernel_size", m.kernel_size, m.kernel_size >= 1, "must be >= 1"
    if m.dilation is not None:
        yield "model.dilation", m.dilation, m.dilation >= 1, "must be >= 1"
    yield "model.dropout", m.dropout, 0 <= m.dropout < 1, "must lie in [0, 1)"
    yield ("logger.mode", cfg.logger.mode,
           cfg.logger.mode in ("auto", "online", "offline", "disabled"),
           "must be one of auto, online, offline, disabled")


def validate_config(cfg) -> None:
    """Raise ConfigError naming every out-of-range field, and every unknown component name."""
    from convexp.models import MODELS
    from convexp.optim import OPTIMIZERS, SCHEDULERS
    from convexp.runner import parse_flag

    _check_schema_keys(cfg)
    problems = [f"{key}={value!r} {rule}" for key, value, ok, rule in _checks(cfg) if not ok]
    for key, registry in (("model.name", MODELS), ("optimizer.name", OPTIMIZERS),
                          ("scheduler.name", SCHEDULERS)):
        name = _get(cfg, key)
        if name not in registry:
            problems.append(f"{key}={name!r} is unknown; registered: {', '.join(registry.names())}")
    if cfg.logger.name not in ("wandb", "none"):
        problems.append(f"logger.name={cfg.logger.name!r} is unknown; available: none, wandb")
    for key in ("trainer.compile", "trainer.progress"):
        try:
            parse_flag(_get(cfg, key), key)
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _check_schema_keys(cfg) -> None:
    """Keys added with Hydra's `+key=value` bypass the schema: a typo such as
    +model.kernel_sise=5 would be silently ignored. Re-merging onto the schema catches it."""
    from convexp.schema import Config

    try:
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        detail = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"unknown or mistyped config key {key!r}: {detail}") from None


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
