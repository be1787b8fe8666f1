"""What `pip install` brings: every runtime dependency is used, Optuna and its pins come only
with the `hpo` extra (not with `sweep`), and `dev` has everything the suite needs."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Distribution name -> the module it installs, where they differ.
MODULES = {"hydra-core": "hydra", "hydra-optuna-sweeper": "hydra_plugins"}
OPTUNA = {"hydra-optuna-sweeper", "sqlalchemy", "alembic"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _imported_modules() -> set[str]:
    """The top-level modules convexp's own code imports, anywhere in the package."""
    found = set()
    for path in (REPO / "convexp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_runtime_dependency_is_imported():
    imported = _imported_modules()
    unused = {name for name in _names(PROJECT["dependencies"])
              if MODULES.get(name, name) not in imported}
    assert not unused, f"runtime dependencies nothing in convexp imports: {unused}"


def test_optuna_comes_with_the_hpo_extra_only():
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    assert OPTUNA <= extras["hpo"]
    assert not OPTUNA & extras["sweep"], extras["sweep"]
    assert not OPTUNA & _names(PROJECT["dependencies"])
    dev = PROJECT["optional-dependencies"]["dev"][0]  # convexp[report,sweep,hpo,export]
    assert {"sweep", "hpo", "export", "report"} <= set(re.findall(r"\w+", dev.split("[")[1]))
