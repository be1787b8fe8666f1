"""Optimizers and learning-rate schedules: each option's fields (its schema) and its builder,
side by side. Adding one is a dataclass and a builder here plus `conf/<group>/<name>.yaml`."""

from __future__ import annotations

import math

import torch

from convexp.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")
SCHEDULERS: Registry[torch.optim.lr_scheduler.LRScheduler | None] = Registry("scheduler")


def _impl_flags(device: torch.device) -> dict:
    # The fused kernels do the whole parameter update in one op: the cheapest step on CPU and
    # CUDA alike for these small nets (see benchmarks/README.md).
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


# --- optimizers -----------------------------------------------------------------------------


@OPTIMIZERS.register("sgd")
def sgd(cfg, params, device):
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay, **_impl_flags(device),
    )


@OPTIMIZERS.register("adam")
def adam(cfg, params, device):
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
        **_impl_flags(device),
    )


@OPTIMIZERS.register("adamw")
def adamw(cfg, params, device):
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
        **_impl_flags(device),
    )


# --- schedules ------------------------------------------------------------------------------


@SCHEDULERS.register("none")
def no_schedule(cfg, optimizer, total_steps):
    return None


@SCHEDULERS.register("onecycle")
def onecycle(cfg, optimizer, total_steps):
    if total_steps < 3:  # too short for a warm-up and a decay phase: a constant lr
        return None
    # OneCycleLR divides by its warm-up length in steps: keep it at least 2 steps long.
    pct_start = min(max(cfg.pct_start, 2 / total_steps), 1 - 1 / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=optimizer.param_groups[0]["lr"], total_steps=total_steps,
        pct_start=pct_start, div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
    )


@SCHEDULERS.register("cosine")
def cosine(cfg, optimizer, total_steps):
    base_lr = optimizer.param_groups[0]["lr"]
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(cfg.name, cfg, params, device)


def build_scheduler(cfg, optimizer, total_steps: int):
    return SCHEDULERS.build(cfg.name, cfg, optimizer, total_steps)
