"""The trainer's `auto` settings, resolved in one place and one order, for the job and the bench.

    resolve_auto(trainer_cfg, device, model) -> AutoSettings(precision, compile, ...)

1. `trainer.precision` (auto | fp32 | bf16): convexp.precision's rule, which reads the built
   model and the device.
2. `trainer.compile` (null = auto | true | false): null compiles only on CUDA. On the CPU,
   measured on 2 cores (benchmarks/README.md), the compile time is not repaid within a typical
   run and depthwise nets train slower compiled.

The Runner takes the resolved values; a resumed run's config holds the precision it started
with (never `auto`), so it keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convexp.errors import ConfigError
from convexp.precision import resolve_precision
from convexp.schema import value


@dataclass(frozen=True)
class AutoSettings:
    precision: str  # "fp32" | "bf16": the one that runs
    precision_why: str  # one line for the log
    compile: bool  # whether the train step is compiled
    compile_why: str


def resolve_compile(setting: bool | None, device: torch.device) -> tuple[bool, str]:
    """Whether to compile for `trainer.compile=setting` on `device`, and why."""
    if setting is not None:
        return bool(setting), f"{'compiled' if setting else 'eager'} (trainer.compile={setting})"
    if torch.device(device).type == "cuda":
        return True, "auto: compiled on CUDA"
    return False, "auto: eager, compiling is not repaid on this device (measured on CPU)"


def resolve_auto(trainer_cfg, device: torch.device, model: nn.Module) -> AutoSettings:
    """Every `auto` trainer setting for the built `model` on `device`, in one order."""
    precision, precision_why = resolve_precision(value(trainer_cfg.precision), device, model)
    compile_, compile_why = resolve_compile(trainer_cfg.get("compile"), device)
    mode = trainer_cfg.get("compile_mode")
    if mode is not None and not compile_:  # validation catches trainer.compile=false only
        raise ConfigError(f"trainer.compile_mode={mode} applies only when compiling, and this "
                          f"run does not ({compile_why}): set trainer.compile=true, or drop it")
    return AutoSettings(precision, precision_why, compile_, compile_why)
