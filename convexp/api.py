"""Python entry points: compose a config as the CLI would, and run one job in-process."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from convexp.errors import ConvexpError
from convexp.job import SUMMARY, JobContext
from convexp.paths import CONFIG_DIR
from convexp.task import resume_output_dir, run


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m convexp <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train(overrides: Sequence[str] = (), output_dir: str | Path = "outputs/api") -> dict[str, Any]:
    """Run one training job in this process; returns its summary.json as a dict, whatever
    the job's status (a diverged run does not raise). Bad input raises SystemExit(2). A resumed
    run (`resume=RUN_DIR`) continues in RUN_DIR, as on the command line."""
    cfg = compose_config(overrides)
    output_dir = Path(output_dir)
    if cfg.resume is not None:
        try:
            output_dir = resume_output_dir(cfg.resume, output_dir)
        except ConvexpError:
            pass  # `run` reports it as the command line does

    with _log_to_stderr():
        run(cfg, JobContext(output_dir=output_dir, overrides=list(overrides),
                            exit_on_failure=False))
    return json.loads((output_dir / SUMMARY).read_text())


@contextlib.contextmanager
def _log_to_stderr():
    """The CLI's log lines (the model table, progress, one line per epoch) on stderr, as Hydra
    shows them, unless the caller configured logging itself."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - "
                                           "%(message)s"))
    convexp_log = logging.getLogger("convexp")
    level = convexp_log.level
    convexp_log.addHandler(handler)
    convexp_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        convexp_log.removeHandler(handler)
        convexp_log.setLevel(level)
