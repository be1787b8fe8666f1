"""Python entry points, for notebooks and scripts: compose a config as the CLI would, and run
one job in this process (docs/api.md).

    from convexp.api import train
    result = train(["model=depthwise_dilated", "debug=fast"])
    result["test_acc"], result.run_dir, result.model  # the summary, its dir, the trained net
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from convexp.config_errors import config_error_line
from convexp.errors import ConfigError, ConvexpError
from convexp.job import SUMMARY, JobContext, holds_results
from convexp.paths import CONFIG_DIR
from convexp.schema import new_run_dir
from convexp.task import resume_output_dir, run


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m convexp <overrides>` would run with. A mistake in the overrides
    (a misspelt key, a wrong type, an unknown option) raises ConfigError with the CLI's
    one-line message."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except Exception as e:
        line = config_error_line(e)
        if line is None:
            raise
        raise ConfigError(line) from e


@dataclass(repr=False, eq=False)
class TrainResult(Mapping):
    """What `train` returns: the job's summary (summary.json as a dict), its run dir, and the
    trained model (on the CPU, in eval mode; None when the run wrote no checkpoint, e.g.
    trainer.checkpoint=false). It reads as the summary: `result["test_acc"]`,
    `result.get("reason")`, `dict(result)`."""

    summary: dict[str, Any]
    run_dir: Path
    model: Any = None  # torch.nn.Module | None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def __repr__(self) -> str:
        s = self.summary
        return (f"TrainResult(model={s.get('model')!r}, status={s.get('status')!r}, "
                f"test_acc={s.get('test_acc')!r}, run_dir={str(self.run_dir)!r})")


def train(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> TrainResult:
    """Run one training job in this process, as `python -m convexp <overrides>` would.

    Each call writes to a new run dir, `outputs/DATE/TIME_SUFFIX` as on the command line,
    unless `output_dir` names one (which must not hold another run's results). A resumed run
    (`resume=RUN_DIR`) continues in RUN_DIR. Whatever the job's status (a diverged run does
    not raise), the result holds its summary; bad input (config, data, a model that cannot
    be built) raises a ConvexpError subclass with the CLI's one-line message."""
    cfg = compose_config(overrides)
    fresh = Path(new_run_dir(datetime.now().strftime("%Y-%m-%d/%H-%M-%S")))
    if cfg.resume is not None:
        run_dir = resume_output_dir(cfg.resume, Path(output_dir or fresh))
    elif output_dir is None:
        run_dir = fresh
    else:
        run_dir = Path(output_dir)
        found = holds_results(run_dir)
        if found:
            raise ConfigError(f"output dir {run_dir} already holds another run's results "
                              f"({', '.join(found)}); pass a new output_dir, or none for a "
                              "fresh one")
    with _log_to_stderr():
        run(cfg, JobContext(output_dir=run_dir, overrides=list(overrides),
                            exit_on_failure=False))
    summary = json.loads((run_dir / SUMMARY).read_text())
    return TrainResult(summary, run_dir, _trained_model(run_dir))


def _trained_model(run_dir: Path):
    from convexp.checkpoint import checkpoint_dir
    from convexp.export import load_trained_model

    if not checkpoint_dir(run_dir).is_dir():
        return None
    try:
        return load_trained_model(run_dir)[0]
    except ConvexpError:
        return None  # no last.pt (the run stopped before its first epoch ended)


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
