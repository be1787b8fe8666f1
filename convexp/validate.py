"""Range and consistency checks the typed schema cannot express, run before any work."""

from __future__ import annotations

from convexp.errors import ConfigError


def _checks(cfg):
    m, o, d, t = cfg.model, cfg.optimizer, cfg.data, cfg.trainer
    yield "optimizer.lr", o.lr, o.lr > 0, "must be > 0"
    yield "optimizer.weight_decay", o.weight_decay, o.weight_decay >= 0, "must be >= 0"
    yield "optimizer.momentum", o.momentum, 0 <= o.momentum < 1, "must lie in [0, 1)"
    yield "data.batch_size", d.batch_size, d.batch_size > 0, "must be > 0"
    yield "data.eval_batch_size", d.eval_batch_size, d.eval_batch_size > 0, "must be > 0"
    yield "data.val_size", d.val_size, d.val_size >= 0, "must be >= 0"
    if d.train_size is not None:
        yield "data.train_size", d.train_size, d.train_size > 0, "must be > 0 (or null: all)"
    if d.test_size is not None:
        yield "data.test_size", d.test_size, d.test_size > 0, "must be > 0 (or null: all)"
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


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
