"""Where convexp's configs live: the repository's conf/ in a checkout (or an editable install),
the copy packaged inside convexp/ otherwise."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_REPO_CONF = _PACKAGE.parent / "conf"
CONFIG_DIR = _REPO_CONF if (_REPO_CONF / "config.yaml").is_file() else _PACKAGE / "conf"
