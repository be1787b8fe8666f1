"""The import graph runs one way, as the README's Layout section says: each module imports only
modules of its own layer or a lower one, and no import cycle exists. Also: no module of convexp
is over 700 lines, and the modules documented torch-free import no torch.

LAYERS mirrors the README's table; a module added to convexp/ must be placed in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convexp"

# The README's Layout table, lowest layer first.
LAYERS = {
    "foundations": ["__init__", "errors", "atomic", "paths", "record", "variants", "signals",
                    "config_errors", "_format", "erf_maps", "ops", "analysis", "wandb_env",
                    "launcher_configs", "reaper", "report.stats"],
    "config": ["schema", "naming", "system", "checkpoint"],
    "schemas": ["option_schemas", "registry"],
    "components": ["data", "cifar", "models", "optim", "loggers", "precision"],
    "model tools": ["introspect", "export", "validate", "auto"],
    "training": ["runner", "job"],
    "job": ["task", "launchers"],
    "entry points and tools": ["__main__", "api", "callbacks", "bench", "compare", "report",
                               "report.runs", "report.render", "report.plots",
                               "report.wandb_upload", "report.cli"],
}
LAYER_OF = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
# Modules that never import torch, at import time or later (the report, the record, the CLI's
# no-job path, W&B start-up).
TORCH_FREE = ["record", "variants", "naming", "wandb_env", "config_errors", "option_schemas",
              "schema", "registry", "erf_maps", "_format", "report", "report.runs",
              "report.render", "report.plots", "report.stats", "report.wandb_upload",
              "report.cli", "compare", "cifar", "reaper"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports_of(path: Path) -> set[str]:
    """The convexp modules `path` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "convexp":
                found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
            elif node.module.startswith("convexp."):
                found.add(node.module.removeprefix("convexp."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("convexp.") for a in node.names
                      if a.name.startswith("convexp.")}
    return found - {module_name(path)}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    missing = sorted(set(all_modules()) - set(LAYER_OF))
    assert not missing, f"place these in LAYERS (and the README's Layout table): {missing}"


def test_imports_run_one_way():
    wrong = []
    for name, path in all_modules().items():
        for target in imports_of(path):
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[name]:
                wrong.append(f"{name} ({list(LAYERS)[LAYER_OF[name]]}) imports {target} "
                             f"({list(LAYERS)[LAYER_OF[target]]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: imports_of(path) & set(LAYER_OF) for name, path in all_modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_no_module_is_over_700_lines():
    long = {name: n for name, path in all_modules().items()
            if (n := len(path.read_text().splitlines())) > 700}
    assert not long, long


@pytest.mark.parametrize("name", TORCH_FREE)
def test_torch_free_modules_never_import_torch(name):
    path = all_modules()[name]
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not any(n == "torch" or n.startswith("torch.") for n in names), name
    for target in imports_of(path):
        assert target in TORCH_FREE or target in LAYERS["foundations"] and \
            target not in ("ops", "analysis"), f"{name} imports {target}, which may import torch"
