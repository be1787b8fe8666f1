"""convexp: compare convolution designs on MNIST with Hydra configs, one runner and W&B.

The public API is imported on first use (PEP 562), so `python -m convexp.compare` does not pay
for importing torch."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["build_model", "list_models", "register_model", "__version__"]


def __getattr__(name: str):
    if name in ("build_model", "list_models", "register_model"):
        return getattr(importlib.import_module("convexp.models"), name)
    raise AttributeError(f"module 'convexp' has no attribute {name!r}")
