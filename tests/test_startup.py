"""Start-up: `--help`, `--cfg`, `--info` and shell-completion queries compose the config
without importing torch (seconds on a small machine); a job still imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import cli_env

from convexp.__main__ import runs_no_job


def _imported_modules(args: list[str], tmp_path, extra_env: dict | None = None
                      ) -> tuple[set[str], str]:
    """The modules `python -X importtime -m convexp ARGS` imported, and its stdout."""
    env = {**cli_env(tmp_path), **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "convexp", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and line.count("|") == 2}
    assert "convexp.option_schemas" in modules, "importtime output not parsed"
    return modules, proc.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["--help"], "Everyday commands"),
    (["--cfg", "job", "model=depthwise_dilated"], "name: depthwise_dilated"),
    (["--info"], "Config search path"),
])
def test_commands_that_run_no_job_do_not_import_torch(tmp_path, args, expected):
    modules, out = _imported_modules(args, tmp_path)
    assert "torch" not in modules and "convexp.task" not in modules
    assert expected in out, out[-2000:]


def test_a_completion_query_does_not_import_torch(tmp_path):
    line = "convexp model=dep"
    modules, out = _imported_modules(["-sc", "query=bash"], tmp_path,
                                     {"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert "torch" not in modules
    assert sorted(out.split()) == ["model=depthwise_dilated", "model=depthwise_separable"]


def test_a_job_is_recognised():
    assert runs_no_job(["--help"]) and runs_no_job(["-sc", "query=bash"])
    assert runs_no_job(["--cfg=hydra"]) and runs_no_job(["model=book_cnn", "-c", "job"])
    assert not runs_no_job(["model=book_cnn", "mode=summary"])
    assert not runs_no_job(["-m", "model.kernel_size=3,5"])
