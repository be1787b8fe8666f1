"""`python -m convexp [overrides]` (and the `convexp` console script): one training job, or a
sweep with -m.

`--help`, `--hydra-help`, `--cfg`, `--info` and shell completion only compose the config:
they import the options' schemas (convexp/option_schemas.py) and never torch, which takes
seconds to import on a small machine. Everything else imports the task."""

from __future__ import annotations

import os
import signal
import sys

import hydra

from convexp.config_errors import config_error_line
from convexp.paths import CONFIG_DIR
from convexp.signals import SECOND_CTRL_C, install_signal_handlers

# Hydra's flags that print something about the config and run no job.
NO_JOB_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
                "--shell-completion", "-sc")


def runs_no_job(argv: list[str]) -> bool:
    return any(arg in NO_JOB_FLAGS or arg.startswith(("--cfg=", "--info=")) for arg in argv)


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for training (convexp/system.py), before any job allocates."""
    from convexp.system import keep_freed_memory as tune

    return tune()


def _no_job(cfg) -> None:  # pragma: no cover - Hydra prints and returns before calling it
    raise AssertionError("a --help/--cfg/--info/completion command started a job")


def main() -> None:
    """Set up the process, then run Hydra; its errors become one `convexp: error:` line."""
    if runs_no_job(sys.argv[1:]):
        import convexp.option_schemas  # noqa: F401 - stores the schemas the YAML files name

        task = _no_job
    else:
        keep_freed_memory()
        # Launchers pickle the task function: the module-level `run`, never a closure.
        from convexp.task import run as task
    install_signal_handlers()
    # Let Hydra's own errors reach us rather than be printed over several lines and exit 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(task)()
    except KeyboardInterrupt:  # a second Ctrl-C outside a job (the job's own says it there)
        print(f"convexp: {SECOND_CTRL_C}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as e:
        line = config_error_line(e)
        if line is None:
            raise
        print(f"convexp: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
