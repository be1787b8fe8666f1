"""Checkpoints: weights, optimizer, scheduler, training progress, RNG state and the resolved
config, as a state-dict file (never a pickled module), written atomically."""

from __future__ import annotations

import io
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
        # weights_only: plain tensors and containers, nothing executable is unpickled.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same answer
        raise ConfigError(f"cannot read checkpoint {path}: {e}") from e
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a convexp checkpoint (format {FORMAT_VERSION})")
    return ckpt


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
