"""`python -m convexp [overrides]` (and the `convexp` console script): one training job, or a
sweep with -m."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from convexp.paths import CONFIG_DIR
from convexp.signals import SECOND_CTRL_C, install_signal_handlers
from convexp.system import keep_freed_memory
from convexp.task import run

# Launchers pickle the task function: decorate the module-level `run`, not a closure.
hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(run)


def error_line(e: BaseException) -> str:
    """One line for a Hydra or OmegaConf error about the command line or the config files:
    Hydra prints several lines (or a traceback) and exits 1, convexp one line and exit 2."""
    cause = e if isinstance(e, OmegaConfBaseException) else e.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        message = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        object_type = getattr(cause, "object_type", None)
        if object_type is not None and "not in" in message:
            fields = ", ".join(getattr(object_type, "__dataclass_fields__", {}))
            if fields:  # a `_target_` model's fields come from its YAML, not a dataclass
                message += f" (its fields: {fields})"
        return f"{key}: {message}" if key else message
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if isinstance(e, MissingConfigException) and lines:
        # "In 'config': Could not find 'model/foo'" + "Available options in 'model':" + names
        options = [line for line in lines[2:] if not line.startswith(("Config search path",
                   "provider=")) and not line.endswith("_schema")]
        return f"{lines[0]}; options: {', '.join(options)}" if options else lines[0]
    return " ".join(lines[:2]) if lines else type(e).__name__


def main() -> None:
    """Set up the process, then run Hydra; its errors become one `convexp: error:` line."""
    keep_freed_memory()
    install_signal_handlers()
    # Let Hydra's own errors reach us rather than be printed over several lines and exit 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except KeyboardInterrupt:  # a second Ctrl-C outside a job (the job's own says it there)
        print(f"convexp: {SECOND_CTRL_C}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except (HydraException, OmegaConfBaseException) as e:
        print(f"convexp: error: {error_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except AssertionError as e:
        if not _raised_in_omegaconf(e):
            raise
        # OmegaConf's answer to a key set below a null node.
        print("convexp: error: an override sets a key below a node that is null (e.g. "
              "data.normalize=null has no mean or std)", file=sys.stderr)
        raise SystemExit(2) from None


def _raised_in_omegaconf(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "omegaconf" in Path(tb.tb_frame.f_code.co_filename).parts


if __name__ == "__main__":
    main()
