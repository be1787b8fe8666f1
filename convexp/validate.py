"""Range and consistency checks the typed schema cannot express, run before any work.

The schema (convexp/schema.py and each option's dataclass) already rejects unknown keys and
wrong types at composition; this module checks values, and re-checks each group against its
option's schema, since Hydra's `+key=value` appends a key past it.
"""

from __future__ import annotations

import dataclasses
import math

from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from convexp.errors import ConfigError
from convexp.schema import (
    GROUPS,
    MAX_SEED,
    Config,
    TrainerConfig,
    option_schema,
    to_container,
    value,
)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _per_channel(x, ok) -> bool:
    """One number, or a non-empty list of numbers (one per channel), each passing `ok`."""
    values = list(x) if isinstance(x, ListConfig | list | tuple) else [x]
    return len(values) > 0 and all(_finite(v) and not isinstance(v, bool) and ok(v)
                                   for v in values)


def _plain_list(x):
    return list(x) if isinstance(x, ListConfig | list | tuple) else x


def _checks(cfg):
    """(key, value, ok, rule) for every field that has a range. Fields that the chosen option
    does not have are absent from the config, so `get` returns None and the check is skipped."""
    o, s, d, t, m = cfg.optimizer, cfg.scheduler, cfg.data, cfg.trainer, cfg.model
    yield "seed", cfg.seed, 0 <= cfg.seed <= MAX_SEED, f"must lie in [0, {MAX_SEED}]"
    yield "optimizer.lr", o.lr, _finite(o.lr) and o.lr > 0, "must be > 0 and finite"
    yield ("optimizer.weight_decay", o.weight_decay,
           _finite(o.weight_decay) and o.weight_decay >= 0, "must be >= 0 and finite")
    if o.get("momentum") is not None:
        yield "optimizer.momentum", o.momentum, 0 <= o.momentum < 1, "must lie in [0, 1)"
        nesterov_ok = not (o.nesterov and o.momentum <= 0)
        yield "optimizer.nesterov", o.nesterov, nesterov_ok, "needs optimizer.momentum > 0"
    if o.get("betas") is not None:
        betas_ok = len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas)
        yield "optimizer.betas", list(o.betas), betas_ok, "must be two numbers in [0, 1)"
        yield "optimizer.eps", o.eps, _finite(o.eps) and o.eps >= 0, "must be >= 0 and finite"
    if s.get("pct_start") is not None:
        yield "scheduler.pct_start", s.pct_start, 0 < s.pct_start < 1, "must lie in (0, 1)"
        yield "scheduler.div_factor", s.div_factor, s.div_factor > 0, "must be > 0"
        yield ("scheduler.final_div_factor", s.final_div_factor, s.final_div_factor > 0,
               "must be > 0")
    if s.get("min_lr") is not None:
        yield "scheduler.min_lr", s.min_lr, _finite(s.min_lr) and s.min_lr >= 0, "must be >= 0"
        yield "scheduler.warmup_steps", s.warmup_steps, s.warmup_steps >= 0, "must be >= 0"
    yield "data.batch_size", d.batch_size, d.batch_size > 0, "must be > 0"
    yield "data.eval_batch_size", d.eval_batch_size, d.eval_batch_size > 0, "must be > 0"
    yield "data.val_size", d.val_size, d.val_size >= 0, "must be >= 0"
    if d.train_size is not None:
        yield "data.train_size", d.train_size, d.train_size > 0, "must be > 0 (or null: all)"
    if d.test_size is not None:
        yield "data.test_size", d.test_size, d.test_size > 0, "must be > 0 (or null: all)"
    yield "data.random_shift", d.random_shift, d.random_shift >= 0, "must be >= 0"
    if d.normalize is not None:
        n = d.normalize
        yield ("data.normalize.mean", _plain_list(n.mean), _per_channel(n.mean, lambda v: True),
               "must be finite: one number, or a list of one per channel")
        yield ("data.normalize.std", _plain_list(n.std), _per_channel(n.std, lambda v: v > 0),
               "must be > 0 and finite: one number, or a list of one per channel")
    yield "trainer.max_epochs", t.max_epochs, t.max_epochs > 0, "must be > 0"
    if t.max_steps is not None:
        yield "trainer.max_steps", t.max_steps, t.max_steps > 0, "must be > 0 (or null: no cap)"
    yield ("trainer.finite_check_every", t.finite_check_every, t.finite_check_every > 0,
           "must be > 0")
    yield ("trainer.progress_every_s", t.progress_every_s,
           _finite(t.progress_every_s) and t.progress_every_s > 0, "must be > 0")
    if t.threads is not None:
        yield "trainer.threads", t.threads, t.threads > 0, "must be > 0 (or null: default)"
    if t.compile_mode is not None:
        yield ("trainer.compile_mode", t.compile_mode, t.compile is not False,
               "applies only when compiling: drop it, or set trainer.compile=true")
    if m.get("channels") is not None and "_target_" not in m:
        channels = list(m.channels)
        yield "model.channels", channels, all(c > 0 for c in channels), "must all be > 0"
    if m.get("kernel_size") is not None and "_target_" not in m:
        yield "model.kernel_size", m.kernel_size, m.kernel_size >= 1, "must be >= 1"
        yield from _dilation_checks(m)
        yield "model.dropout", m.dropout, 0 <= m.dropout < 1, "must lie in [0, 1)"
    yield from mode_checks(cfg)


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _dilation_checks(m):
    """`model.dilation`: an int >= 1 for every block, or one per block (`[1, 2, 5]`)."""
    d = m.dilation
    if isinstance(d, ListConfig | list | tuple):
        schedule = list(d)
        blocks = len(m.channels) if m.get("channels") is not None else len(schedule)
        ok = len(schedule) == blocks and all(_positive_int(x) for x in schedule)
        yield ("model.dilation", schedule, ok,
               f"must list one int >= 1 per block ({blocks} in model.channels), or be one int")
    else:
        yield ("model.dilation", d, _positive_int(d),
               "must be >= 1 (an int, or a list of one per block)")


def mode_checks(cfg):
    """(key, value, ok, rule) for the options that apply to one mode only: checked before the
    run dir is made too (convexp.callbacks), so a refused command leaves no dir behind."""
    mode = value(cfg.mode)
    if cfg.resume is not None:
        yield "resume", cfg.resume, mode == "train", "applies only to mode=train"
    if cfg.checkpoint is not None:
        yield "checkpoint", cfg.checkpoint, mode == "export", "applies only to mode=export"
    if cfg.get("trust_checkpoint"):
        yield ("trust_checkpoint", True, cfg.resume is not None or cfg.checkpoint is not None,
               "applies only with resume=... or mode=export checkpoint=...")


def _failed(checks) -> list[str]:
    return [f"{key}={val!r} {rule}" for key, val, ok, rule in checks if not ok]


def mode_problems(cfg) -> list[str]:
    """What `mode_checks` refuses, one phrase each."""
    return _failed(mode_checks(cfg))


def validate_config(cfg, registries: dict) -> None:
    """Raise ConfigError naming every out-of-range field, every field that does not apply to
    its option, and every unknown option name. `registries` maps each group to its registry."""
    missing = sorted(key for key in OmegaConf.missing_keys(cfg) if not key.startswith("hydra."))
    if missing:  # `???` in a YAML file: the user must set it (e.g. a dataset's data.root)
        raise ConfigError(f"{', '.join(missing)} must be set (it is ??? in the config), e.g. "
                          f"{missing[0]}=...")
    problems = [_schema_problem(cfg, group) for group in GROUPS]
    problems = [p for p in [_top_level_problem(cfg), _trainer_problem(cfg), *problems] if p]
    for group, registry in registries.items():
        node = cfg[group]
        if group == "model" and "_target_" in node:
            continue
        if node.name not in registry:
            problems.append(f"{group}.name={node.name!r} is unknown; registered: "
                            f"{', '.join(registry.names())}")
    if not problems:
        problems = _failed(_checks(cfg))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    if cfg.model.get("_target_") is not None:
        # From YAML or `+model._target_=...`: it must import to a model builder, checked
        # before any data is loaded (convexp.models imports torch: imported here, not above).
        from convexp.models import import_builder

        import_builder(cfg.model._target_)


def _top_level_problem(cfg) -> str | None:
    """A top-level key that nothing reads: Hydra's `+foo=1` appends past the schema, and a
    typo such as `+sed=3` would otherwise train with the default seed."""
    known = {f.name for f in dataclasses.fields(Config)} | {"hydra"}
    unknown = [key for key in cfg if key not in known]
    if not unknown:
        return None
    return (f"top-level {', '.join(map(repr, unknown))}: nothing reads "
            f"{'it' if len(unknown) == 1 else 'them'} (a typo? convexp's top-level keys: "
            f"{', '.join(sorted(known - {'hydra'}))})")


def _trainer_problem(cfg) -> str | None:
    """A `trainer` key that nothing reads: `+trainer.max_epoch=10` appends past the typed
    schema (and would train the default number of epochs)."""
    known = {f.name for f in dataclasses.fields(TrainerConfig)}
    unknown = [key for key in cfg.trainer if key not in known]
    if not unknown:
        return None
    return (f"{', '.join(f'trainer.{key}' for key in unknown)}: nothing reads "
            f"{'it' if len(unknown) == 1 else 'them'} (a typo? trainer's fields: "
            f"{', '.join(sorted(known))})")


def _schema_problem(cfg, group: str) -> str | None:
    """A key that the group's option does not have: Hydra's `+key=value` appends past the
    schema (a typo such as +model.kernel_sise=5 would be silently ignored), and a config from
    elsewhere (a checkpoint, the Python API) never met it. Re-merging onto it catches both."""
    node = cfg[group]
    schema = option_schema(group, node.get("name"))
    if schema is None or "_target_" in node:
        return None
    try:
        OmegaConf.merge(OmegaConf.structured(schema), to_container(node))
    except OmegaConfBaseException as e:
        key = getattr(e, "key", None)
        detail = str(getattr(e, "msg", e)).splitlines()[0]
        where = f"{group}.{key}" if key else group
        return (f"{where} does not apply to {group}={node.name} ({schema.__name__}): "
                f"{detail}")
    return None
