"""Shared helpers: run convexp as a user would (a subprocess), or in-process for speed.

Every training here uses real MNIST (the bundled files), on small subsets so the suite stays
within a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A short real-MNIST run: 2,000 training images, 500 validation, 1,000 test, one epoch.
SMALL = [
    "data.train_size=2000", "data.val_size=500", "data.test_size=1000",
    "trainer.max_epochs=1", "trainer.progress=false",
]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
        "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "HYDRA_FULL_ERROR": "0",
    })
    env.pop("WANDB_API_KEY", None)
    return env


def run_cli(args: list[str], tmp_path: Path, *, timeout: float = 300, multirun: bool = False,
            check_rc: int | None = None) -> subprocess.CompletedProcess:
    """`python -m convexp [-m] ARGS` with outputs under tmp_path; stdout and stderr captured."""
    out = ["hydra.sweep.dir=" + str(tmp_path / "multirun")] if multirun else [
        "hydra.run.dir=" + str(tmp_path / "run")]
    cmd = [sys.executable, "-m", "convexp", *(["-m"] if multirun else []), *args, *out]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, (
            f"exit {proc.returncode} != {check_rc}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
            f"STDERR:\n{proc.stderr[-4000:]}")
    return proc


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def wandb_inspect(run_dir: Path, summary: bool = True) -> dict | list:
    """Read an offline W&B run back with `wandb leet inspect --json`."""
    offline = sorted(Path(run_dir).glob("wandb/offline-run-*"))
    assert offline, f"no offline W&B run under {run_dir}/wandb"
    cmd = ["wandb", "leet", "inspect", "--json", *(["--summary"] if summary else []),
           str(offline[-1])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    if summary:
        return json.loads(proc.stdout)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture
def small() -> list[str]:
    return list(SMALL)
