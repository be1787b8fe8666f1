"""Python entry points: compose a config as the CLI would, and run one job in-process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from convexp.paths import CONFIG_DIR
from convexp.schema import register_configs


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m convexp <overrides>` would run with."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train(overrides: Sequence[str] = (), output_dir: str | Path = "outputs/api") -> dict[str, Any]:
    """Run one training job in this process; returns its summary.json as a dict, whatever
    the job's status (a diverged run does not raise). Bad input raises SystemExit(2)."""
    from convexp.task import SUMMARY, run

    cfg = compose_config(overrides)
    output_dir = Path(output_dir)
    run(cfg, {"output_dir": output_dir, "overrides": list(overrides), "multirun": False,
              "api": True})
    return json.loads((output_dir / SUMMARY).read_text())
