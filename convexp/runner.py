"""The training and evaluation loop shared by every model.

Per step there is no host sync: loss and accuracy accumulate on the device and are read once
per epoch (plus a cheap finiteness check every `trainer.finite_check_every` steps, and a
progress line every `trainer.progress_every_s` seconds). The data's order, augmentation and
batching belong to `convexp.data.TrainLoader`: the loop only consumes batches.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from convexp.atomic import os_error_text
from convexp.checkpoint import LAST, checkpoint_dir, rng_state, save_checkpoint, set_rng_state
from convexp.data import Dataset, Normalizer, Split, TrainLoader
from convexp.errors import ConfigError
from convexp.optim import build_optimizer, build_scheduler
from convexp.system import sync

log = logging.getLogger(__name__)


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
    status: str  # completed | diverged | interrupted | failed
    reason: str | None
    progress: Progress


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is kept."""


class Runner:
    """Trains `model` on `data` as `cfg` says. `precision` ("fp32" or "bf16") and `compile`
    are the settings that run, already resolved from `trainer.precision` and
    `trainer.compile` (convexp.auto.resolve_auto)."""

    def __init__(
        self, cfg, model: nn.Module, data: Dataset, device: torch.device, out_dir: Path,
        precision: str = "fp32", compile: bool = False,  # noqa: A002 - trainer.compile's name
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
        self.normalize = Normalizer(cfg.data.normalize, device)
        self.precision = precision
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters(), device)
        self.loader = TrainLoader(self.data.train, cfg.data, cfg.seed, cfg.trainer.drop_last)
        self.steps_per_epoch = self.loader.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                f"({len(self.data.train)} images): with trainer.drop_last=true no step would run"
            )
        self.total_steps = self.steps_per_epoch * cfg.trainer.max_epochs
        if cfg.trainer.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.trainer.max_steps)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, self.total_steps)
        self.compiled = bool(compile)
        self.train_step = self._make_train_step()
        self.progress = Progress()

    # --- steps ---------------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the model sees it: normalised floats in the training layout."""
        return self.normalize(images).contiguous(memory_format=self.memory_format)

    def _forward_loss(self, images: torch.Tensor, labels: torch.Tensor):
        with self._autocast():
            logits = self.model(self.inputs(images))
        loss = F.cross_entropy(logits.float(), labels)
        correct = (logits.argmax(1) == labels).sum()
        return loss, correct

    def _make_train_step(self):
        forward_loss = self._forward_loss
        if self.compiled:
            forward_loss = torch.compile(forward_loss, mode=self.trainer_cfg.compile_mode)

        def step(images, labels):
            """One optimisation step on a uint8 batch; returns (loss, correct) on the device."""
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
                logits = self.model(self.inputs(images))
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
        try:
            return save_checkpoint(path, {**self.state_dict(), **self.checkpoint_extra()})
        except OSError as e:
            cause = os_error_text(e)
            raise CheckpointWriteError(f"could not write checkpoint {path}: {cause}; the "
                                       "previous checkpoint, if any, is kept") from e

    # --- the loop ------------------------------------------------------------------------

    def fit(self) -> FitResult:
        p, tc = self.progress, self.trainer_cfg
        self._graphs_at_start = _compiled_graph_count()
        self.model.train()
        report = ProgressReport(tc.progress, tc.progress_every_s, self.total_steps,
                                self.data_cfg.batch_size, initial=p.global_step,
                                epoch=p.epoch + 1, max_epochs=tc.max_epochs)
        try:
            while p.epoch < tc.max_epochs and not self._step_cap_reached():
                outcome = self._train_epoch(report)
                if outcome is not None:
                    return outcome
        except CheckpointWriteError as e:
            return FitResult("failed", str(e), p)
        finally:
            report.close()
        return FitResult("completed", None, p)

    @property
    def ran_compiled(self) -> bool:
        """Whether dynamo really captured graphs during fit(), rather than running eager."""
        return self.compiled and _compiled_graph_count() > getattr(self, "_graphs_at_start", 0)

    def _step_cap_reached(self) -> bool:
        return self.trainer_cfg.max_steps is not None and (
            self.progress.global_step >= self.trainer_cfg.max_steps
        )

    def _train_epoch(self, report: ProgressReport) -> FitResult | None:
        p, tc = self.progress, self.trainer_cfg
        partial = p.partial or {}
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), device=self.device)
        correct = torch.tensor(partial.get("correct", 0), device=self.device)
        seen = partial.get("seen", 0)
        time_before = partial.get("time_s", 0.0)
        sync(self.device)
        start = time.perf_counter()

        def elapsed() -> float:
            sync(self.device)
            return time_before + time.perf_counter() - start

        for images, labels in self.loader.epoch(p.epoch, start=p.step_in_epoch):
            loss, batch_correct = self.train_step(images, labels)
            n = labels.shape[0]
            loss_sum += loss * n
            correct += batch_correct
            seen += n
            p.step_in_epoch += 1
            p.global_step += 1
            report.step(p.epoch + 1, self.trainer_cfg.max_epochs, p.global_step, loss)
            if p.global_step % tc.finite_check_every == 0 and not torch.isfinite(loss_sum):
                return self._diverged(p.global_step)
            if self.should_stop():
                train_s = elapsed()
                if not torch.isfinite(loss_sum) or not self._weights_finite():
                    return self._diverged(p.global_step)
                p.partial = {"loss_sum": loss_sum.item(), "correct": int(correct.item()),
                             "seen": seen, "time_s": train_s}
                if self.save() is None:
                    return FitResult("interrupted", "stopped by a signal; no checkpoint was "
                                     "written (trainer.checkpoint=false), so it cannot resume", p)
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
    # torch._dynamo loads on first use (about a second): a run that never compiles skips it.
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class ProgressReport:
    """Live feedback while an epoch runs: a tqdm bar labelled `epoch i/n` with the loss on a
    terminal; elsewhere (Slurm logs, nohup, notebooks, the Python API) a log line every
    `every_s` seconds with the step, the loss and samples/s. `enabled`: true | false | null (a
    bar on a terminal, lines otherwise). Reading the loss syncs with the device, so it happens
    only when shown. While the bar is open, console log lines (the epoch line) are written
    above it through tqdm, so none lands on the bar's line; a closed bar leaves nothing."""

    def __init__(self, enabled: bool | None, every_s: float, total: int, batch_size: int,
                 initial: int = 0, epoch: int = 1, max_epochs: int = 1):
        self.every_s, self.total, self.batch_size = every_s, total, batch_size
        self.bar = None
        self._redirect = contextlib.ExitStack()
        self.lines = enabled is None and not sys.stderr.isatty()
        if enabled or (enabled is None and sys.stderr.isatty()):
            self.epoch = epoch
            self._redirect.enter_context(logging_redirect_tqdm(
                loggers=_console_loggers(), tqdm_class=tqdm))
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            leave=False, desc=_epoch_label(epoch, max_epochs))
        self.last_time, self.last_step = time.perf_counter(), initial

    def step(self, epoch: int, max_epochs: int, global_step: int, loss: torch.Tensor) -> None:
        if self.bar is not None:
            if epoch != self.epoch:
                self.epoch = epoch
                self.bar.set_description(_epoch_label(epoch, max_epochs), refresh=False)
            self.bar.update(1)
            if global_step % 20 == 0:
                self.bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            return
        if not self.lines:
            return
        now = time.perf_counter()
        if now - self.last_time < self.every_s:
            return
        rate = (global_step - self.last_step) * self.batch_size / (now - self.last_time)
        log.info("epoch %d/%d  step %d/%d  loss %.4f  %.0f samples/s", epoch, max_epochs,
                 global_step, self.total, loss.item(), rate)
        self.last_time, self.last_step = now, global_step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._redirect.close()


def _epoch_label(epoch: int, max_epochs: int) -> str:
    return f"epoch {epoch}/{max_epochs}"


def _console_loggers() -> list[logging.Logger]:
    """The loggers whose handlers write to the console (Hydra's on the root logger, the Python
    API's on `convexp`): tqdm's redirect replaces those handlers, and would add a duplicate
    handler to a logger that has none."""
    loggers = [logging.root, logging.getLogger("convexp")]
    return [logger for logger in loggers if any(
        isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
        for h in logger.handlers)]
