"""One line for an error in the command line or the config files (Hydra's and OmegaConf's
exceptions), shared by the CLI (`convexp: error: LINE`, exit 2) and the Python API
(`ConfigError(LINE)`). Torch-free: the CLI imports it before it knows a job will run."""

from __future__ import annotations

from pathlib import Path

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

NULL_NODE = ("an override sets a key below a node that is null (e.g. data.normalize=null has "
             "no mean or std)")


def error_line(e: BaseException) -> str:
    """One line for a Hydra or OmegaConf error about the command line or the config files:
    Hydra prints several lines (or a traceback) and exits 1, convexp one line and exit 2."""
    cause = e if isinstance(e, OmegaConfBaseException) else e.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        message = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        if "not in" in message:
            fields = ", ".join(_fields(cause))
            if fields:
                message += f" (its fields: {fields})"
        return f"{key}: {message}" if key else message
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if isinstance(e, MissingConfigException) and lines:
        # "In 'config': Could not find 'model/foo'" + "Available options in 'model':" + names
        options = [line for line in lines[2:] if not line.startswith(("Config search path",
                   "provider=")) and not line.endswith("_schema")]
        return f"{lines[0]}; options: {', '.join(options)}" if options else lines[0]
    return " ".join(lines[:2]) if lines else type(e).__name__


def _fields(cause: OmegaConfBaseException) -> list[str]:
    """The fields of the node a misspelt key was looked up in: its schema dataclass's, or,
    for a node without one (a `_target_` model, whose fields come from its YAML), its keys."""
    object_type = getattr(cause, "object_type", None)
    fields = list(getattr(object_type, "__dataclass_fields__", {}))
    parent = getattr(cause, "parent_node", None)
    if not fields and isinstance(parent, DictConfig):
        fields = [str(k) for k in parent.keys() if k != "_target_"]
    return fields


def config_error_line(e: BaseException) -> str | None:
    """The one-line message for an exception that reports a config or command-line mistake,
    or None for any other exception."""
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        return error_line(e)
    if isinstance(e, AssertionError) and _raised_in_omegaconf(e):
        return NULL_NODE  # OmegaConf's answer to a key set below a null node
    return None


def _raised_in_omegaconf(e: BaseException) -> bool:
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "omegaconf" in Path(tb.tb_frame.f_code.co_filename).parts
