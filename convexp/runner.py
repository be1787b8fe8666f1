"""The training and evaluation loop shared by every model.

Per step there is no host sync: loss and accuracy accumulate on the device and are read once
per epoch (plus a cheap finiteness check every `trainer.finite_check_every` steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convexp.checkpoint import LAST, checkpoint_dir, rng_state, save_checkpoint, set_rng_state
from convexp.data import Dataset, Normalizer, Split, epoch_order, epoch_shifts, shift_images
from convexp.errors import ConfigError, DeviceError
from convexp.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    name = getattr(name, "value", name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("trainer.device=cuda, but CUDA is not available on this machine "
                          "(use trainer.device=auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("trainer.device=mps, but MPS is not available on this machine "
                          "(use trainer.device=auto or cpu)")
    return torch.device(name)


def parse_flag(value: Any, key: str) -> bool | None:
    """auto -> None; true/false (bool or string) -> bool."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key}={value!r}: expected auto, true or false")


def should_compile(setting: Any, device: torch.device) -> bool:
    """`auto` compiles only on CUDA. On CPU, measured on 2 cores (benchmarks/README.md), the
    compile time is not repaid within a typical run and depthwise nets train slower compiled."""
    forced = parse_flag(setting, "trainer.compile")
    return device.type == "cuda" if forced is None else forced


@dataclass
class Progress:
    """Everything about where training stands, saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # batches done in the current, unfinished epoch
    global_step: int = 0
    best_val_acc: float | None = None
    train_time_s: float = 0.0  # training compute only, no evaluation
    history: list[dict] = field(default_factory=list)
    # Sums for the unfinished epoch: loss_sum, correct, seen, time_s.
    partial: dict[str, Any] | None = None


@dataclass
class FitResult:
    status: str  # completed | diverged | interrupted
    reason: str | None
    progress: Progress


class Runner:
    def __init__(
        self, cfg, model: nn.Module, data: Dataset, device: torch.device, out_dir: Path,
        on_epoch: Callable[[dict], None] = lambda metrics: None,
        should_stop: Callable[[], bool] = lambda: False,
        checkpoint_extra: Callable[[], dict] = dict,
    ):
        self.cfg, self.device, self.out_dir = cfg, device, Path(out_dir)
        self.data = data.to(device)
        self.trainer_cfg, self.data_cfg = cfg.trainer, cfg.data
        self.on_epoch, self.should_stop = on_epoch, should_stop
        self.checkpoint_extra = checkpoint_extra
        self.memory_format = (
            torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
        )
        self.model = model.to(device=device, memory_format=self.memory_format)
        self.normalize = Normalizer(cfg.data.normalize, cfg.data.mean, cfg.data.std)
        precision = getattr(cfg.trainer.precision, "value", cfg.trainer.precision)
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters(), device)
        self.steps_per_epoch = self._steps_per_epoch()
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                f"({len(self.data.train)} images): with trainer.drop_last=true no step would run"
            )
        self.total_steps = self.steps_per_epoch * cfg.trainer.max_epochs
        if cfg.trainer.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.trainer.max_steps)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, self.total_steps)
        self.compiled = should_compile(cfg.trainer.compile, device)
        self._train_step = self._make_train_step()
        self.progress = Progress()

    # --- steps ---------------------------------------------------------------------------

    def _steps_per_epoch(self) -> int:
        n, bs = len(self.data.train), self.data_cfg.batch_size
        return n // bs if self.trainer_cfg.drop_last else math.ceil(n / bs)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images).contiguous(memory_format=self.memory_format)

    def _forward_loss(self, images: torch.Tensor, labels: torch.Tensor):
        with self._autocast():
            logits = self.model(self._inputs(images))
        loss = F.cross_entropy(logits.float(), labels)
        correct = (logits.argmax(1) == labels).sum()
        return loss, correct

    def _make_train_step(self):
        forward_loss = self._forward_loss
        if self.compiled:
            forward_loss = torch.compile(forward_loss, mode=self.trainer_cfg.compile_mode)

        def step(images, labels):
            loss, correct = forward_loss(images, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            return loss.detach(), correct

        return step

    @torch.no_grad()
    def evaluate(self, split: Split | None) -> tuple[float | None, float | None]:
        """Mean loss and accuracy over every sample of `split` (eager, eval mode)."""
        if split is None or len(split) == 0:
            return None, None
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for images, labels in split.batches(self.data_cfg.eval_batch_size):
            with self._autocast():
                logits = self.model(self._inputs(images))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        self.model.train(was_training)
        n = len(split)
        return loss_sum.item() / n, correct.item() / n

    # --- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "progress": asdict(self.progress),
            "rng": rng_state(),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.progress = Progress(**ckpt["progress"])
        set_rng_state(ckpt["rng"])

    def save(self) -> Path | None:
        if not self.trainer_cfg.checkpoint:
            return None
        path = checkpoint_dir(self.out_dir) / LAST
        return save_checkpoint(path, {**self.state_dict(), **self.checkpoint_extra()})

    # --- the loop ------------------------------------------------------------------------

    def fit(self) -> FitResult:
        p, tc = self.progress, self.trainer_cfg
        self._graphs_at_start = _compiled_graph_count()
        self.model.train()
        bar = _progress_bar(tc.progress, self.total_steps, initial=p.global_step)
        try:
            while p.epoch < tc.max_epochs and not self._step_cap_reached():
                outcome = self._train_epoch(bar)
                if outcome is not None:
                    return outcome
        finally:
            if bar is not None:
                bar.close()
        return FitResult("completed", None, p)

    @property
    def ran_compiled(self) -> bool:
        """Whether dynamo really captured graphs during fit(), rather than running eager."""
        return self.compiled and _compiled_graph_count() > getattr(self, "_graphs_at_start", 0)

    def _step_cap_reached(self) -> bool:
        return self.trainer_cfg.max_steps is not None and (
            self.progress.global_step >= self.trainer_cfg.max_steps
        )

    def epoch_batches(self, epoch: int, start: int = 0
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The uint8 training batches of one epoch, from batch number `start` on: the epoch's
        seeded order, and its seeded random shifts when data.random_shift > 0."""
        train, dc = self.data.train, self.data_cfg
        order = epoch_order(len(train), self.cfg.seed, epoch, self.device) if dc.shuffle else None
        shifts = (
            epoch_shifts(len(train), dc.random_shift, self.cfg.seed, epoch, self.device)
            if dc.random_shift > 0 else None
        )
        batches = train.batches(dc.batch_size, order, self.trainer_cfg.drop_last, start)
        for i, (images, labels) in enumerate(batches, start):
            if shifts is not None:
                first = i * dc.batch_size
                images = shift_images(images, shifts[first : first + dc.batch_size],
                                      dc.random_shift)
            yield images, labels

    def _train_epoch(self, bar) -> FitResult | None:
        p, tc = self.progress, self.trainer_cfg
        partial = p.partial or {}
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), device=self.device)
        correct = torch.tensor(partial.get("correct", 0), device=self.device)
        seen = partial.get("seen", 0)
        time_before = partial.get("time_s", 0.0)
        _sync(self.device)
        start = time.perf_counter()

        def elapsed() -> float:
            _sync(self.device)
            return time_before + time.perf_counter() - start

        for images, labels in self.epoch_batches(p.epoch, start=p.step_in_epoch):
            loss, batch_correct = self._train_step(images, labels)
            n = labels.shape[0]
            loss_sum += loss * n
            correct += batch_correct
            seen += n
            p.step_in_epoch += 1
            p.global_step += 1
            if bar is not None:
                bar.update(1)
            if p.global_step % tc.finite_check_every == 0 and not torch.isfinite(loss_sum):
                return self._diverged(p.global_step)
            if self.should_stop():
                train_s = elapsed()
                if not torch.isfinite(loss_sum) or not self._weights_finite():
                    return self._diverged(p.global_step)
                p.partial = {"loss_sum": loss_sum.item(), "correct": int(correct.item()),
                             "seen": seen, "time_s": train_s}
                self.save()
                return FitResult("interrupted", "stopped by a signal; resume with "
                                 f"resume={self.out_dir}", p)
            if self._step_cap_reached():
                break
        train_s = elapsed()
        if not torch.isfinite(loss_sum) or not self._weights_finite():
            return self._diverged(p.global_step)
        p.train_time_s += train_s - time_before
        val_loss, val_acc = self.evaluate(self.data.val)
        p.epoch += 1
        metrics = {
            "epoch": p.epoch,
            "step": p.global_step,
            "train_loss": loss_sum.item() / max(seen, 1),
            "train_acc": correct.item() / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": train_s,
            "train_samples_per_s": seen / train_s if train_s > 0 else None,
        }
        if val_acc is not None and (p.best_val_acc is None or val_acc > p.best_val_acc):
            p.best_val_acc = val_acc
        p.history.append(metrics)
        p.step_in_epoch, p.partial = 0, None
        self.save()
        self.on_epoch(metrics)
        return None

    def _weights_finite(self) -> bool:
        """The loss of a step is computed before its update: check the weights themselves
        before a checkpoint can overwrite a good one."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        return bool(torch.stack([t.isfinite().all() for t in tensors]).all())

    def _diverged(self, step: int) -> FitResult:
        # The weights are no longer finite: the last checkpoint on disk stays as it is.
        return FitResult("diverged", f"non-finite training loss or weights by step {step}",
                         self.progress)


def _compiled_graph_count() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _progress_bar(setting: Any, total: int, initial: int):
    enabled = parse_flag(setting, "trainer.progress")
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)
