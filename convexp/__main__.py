"""`python -m convexp [overrides]` (and the `convexp` console script): one training job, or a
sweep with -m."""

from __future__ import annotations

import os
import sys

import hydra

from convexp.config_errors import config_error_line
from convexp.paths import CONFIG_DIR
from convexp.signals import install_signal_handlers
from convexp.system import keep_freed_memory
from convexp.task import run

# Launchers pickle the task function: decorate the module-level `run`, not a closure.
hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(run)


def main() -> None:
    """Set up the process, then run Hydra; its errors become one `convexp: error:` line."""
    keep_freed_memory()
    install_signal_handlers()
    # Let Hydra's own errors reach us rather than be printed over several lines and exit 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as e:
        line = config_error_line(e)
        if line is None:
            raise
        print(f"convexp: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
