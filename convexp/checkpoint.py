"""Checkpoints: weights, optimizer, scheduler, training progress, RNG state and the resolved
config, as a state-dict file (never a pickled module), written atomically."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from convexp.atomic import atomic_write
from convexp.errors import ConfigError

FORMAT_VERSION = 1
LAST = "last.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Serialise in memory, then write atomically: a full disk then raises OSError(ENOSPC)
    from the write itself, where torch.save writing to the file raised an opaque
    RuntimeError ("[enforce fail at inline_container.cc:...]")."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir holding checkpoints/last.pt."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = checkpoint_dir(path) / LAST
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: give a run dir or a checkpoint file")
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        # weights_only: plain tensors and containers, nothing executable is unpickled. Its
        # warnings (e.g. about a foreign pickle protocol) would add lines to the one error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same answer
        raise ConfigError(f"cannot read checkpoint {path}: {_load_error(e)}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path} is not a convexp checkpoint (format {FORMAT_VERSION})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a convexp checkpoint (format {FORMAT_VERSION})")
    return ckpt


def _load_error(e: Exception) -> str:
    """torch.load's error in one line: its weights_only refusal is six lines of advice (one
    of which suggests weights_only=False); keep what it found."""
    text = str(e)
    if not text.startswith("Weights only load failed"):
        return " ".join(text.split())[:300] or type(e).__name__
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    found = [line.replace("Please file an issue with the following so that we can make "
                          "`weights_only=True` compatible with your use case: ", "")
             for line in lines if not line.startswith("Check the documentation")]
    return ("it holds pickled objects other than tensors and plain containers, which convexp "
            f"never unpickles ({' '.join(found)[:200]})")


TRUST_OPTION = "trust_checkpoint"


def recorded_target(ckpt: dict[str, Any]) -> str | None:
    """The `_target_` a checkpoint's recorded config names for its model (None: a registered
    model, which convexp builds without importing anything)."""
    model = (ckpt.get("config") or {}).get("model")
    return model.get("_target_") if isinstance(model, dict) else None


def check_trusted(ckpt: dict[str, Any], path: str | Path, named_target: str | None,
                  trust: bool) -> None:
    """A checkpoint is data: a run dir is shared, and its recorded config may name any code.
    Its model's `_target_` is imported and called only when the user's own config names the
    same one (their --config-dir model file, as for training it) or they pass
    trust_checkpoint=true; otherwise ConfigError, before anything is imported."""
    target = recorded_target(ckpt)
    if target is None or trust or (named_target is not None and named_target == target):
        return
    yours = (f"your config names model._target_={named_target!r}" if named_target
             else "your config names no model._target_")
    raise ConfigError(
        f"{path} builds its model with model._target_={target!r}, and {yours}: convexp does "
        "not import or call code that only a checkpoint names. Name that model yourself "
        f"(--config-dir DIR model=NAME, a model file whose _target_ is {target!r}), or pass "
        f"{TRUST_OPTION}=true if you trust whoever wrote the checkpoint")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
