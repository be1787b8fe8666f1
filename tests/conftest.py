"""Shared helpers: run convexp as a user would (a subprocess), or in-process for speed, and the
checks that several test files make on what a run leaves behind.

Every training here uses real MNIST (the bundled files), on small subsets so the suite stays
within a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# The suite never reads the home folder's state: no W&B key or settings, no .netrc, no
# matplotlib cache from the person who runs it. Set before anything imports wandb, and inherited
# by every subprocess the tests start. (HOME itself stays: a user-site install lives there.)
_ISOLATED = Path(tempfile.mkdtemp(prefix="convexp-tests-home-"))
atexit.register(shutil.rmtree, _ISOLATED, ignore_errors=True)
os.environ.update({
    "NETRC": str(_ISOLATED / "no-netrc"), "WANDB_CONFIG_DIR": str(_ISOLATED / "wandb-config"),
    "WANDB_CACHE_DIR": str(_ISOLATED / "wandb-cache"),
    "WANDB_DATA_DIR": str(_ISOLATED / "wandb-data"), "MPLCONFIGDIR": str(_ISOLATED / "mpl"),
})
for _var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID",
             "WANDB_RUN_GROUP", "WANDB_SWEEP_ID", "WANDB_MODE"):
    os.environ.pop(_var, None)

import torch

from convexp.api import compose_config
from convexp.job import JobContext
from convexp.runner import Runner
from convexp.task import run

# The quick preset as a user runs it (conf/debug/fast.yaml): 8,000 training images in batches
# of 64, 500 validation, 1,000 test, one epoch, logger=none; no progress output. For tests of
# what the preset reaches.
PRESET_RUN = ["debug=fast", "trainer.progress=false"]
# The same preset on a quarter of its training images (2,000 in batches of 128: 16 steps), for
# the many tests that check what a run records, not what it learns; they finish 4x sooner.
# Tests add their own overrides on top (a logger, a batch size, other sizes).
FAST_RUN = [*PRESET_RUN, "data.train_size=2000", "data.batch_size=128"]


# --- the command line -----------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
        "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "HYDRA_FULL_ERROR": "0",
    })
    env.pop("WANDB_API_KEY", None)
    return env


def cli_command(args: list[str], tmp_path: Path, *, multirun: bool = False,
                run_dir: bool = True) -> list[str]:
    """`python -m convexp [-m] ARGS` with its output dir under tmp_path: tmp_path/run, or
    tmp_path/multirun for a sweep. run_dir=False leaves the run dir to convexp (a resumed
    run or an export writes into the run dir it continues)."""
    out = (["hydra.sweep.dir=" + str(tmp_path / "multirun")] if multirun else
           ["hydra.run.dir=" + str(tmp_path / "run")] if run_dir else [])
    return [sys.executable, "-m", "convexp", *(["-m"] if multirun else []), *args, *out]


def run_cli(args: list[str], tmp_path: Path, *, timeout: float = 1500, multirun: bool = False,
            run_dir: bool = True, check_rc: int | None = None) -> subprocess.CompletedProcess:
    """`python -m convexp [-m] ARGS` (see cli_command), run in tmp_path; stdout and stderr
    captured."""
    cmd = cli_command(args, tmp_path, multirun=multirun, run_dir=run_dir)
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, (
            f"exit {proc.returncode} != {check_rc}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
            f"STDERR:\n{proc.stderr[-4000:]}")
    return proc


def start_cli(args: list[str], tmp_path: Path) -> subprocess.Popen:
    """`python -m convexp ARGS` in the background, as run_cli would run it, with stdout and
    stderr together in tmp_path/output.txt."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "output.txt", "w") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(cli_command(args, tmp_path), cwd=tmp_path,
                                env=cli_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)


# --- in-process jobs ------------------------------------------------------------------------


def run_job_until_exit(overrides: list[str], out_dir: Path, capsys,
                       forbid_training=None) -> tuple[int, str]:
    """Compose and run one job as `python -m convexp FAST_RUN OVERRIDES` would, in this
    process, expecting it to end the process: returns (exit code, stderr). With a monkeypatch
    as forbid_training, training itself is forbidden: reaching Runner.fit fails the test,
    which proves that the error came before any training."""
    if forbid_training is not None:
        def no_training(self):
            raise AssertionError("training started: the bad input was not caught beforehand")

        forbid_training.setattr(Runner, "fit", no_training)
    cfg = compose_config([*FAST_RUN, *overrides])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(cfg, JobContext(output_dir=out_dir, overrides=list(overrides)))
    return exc.value.code, capsys.readouterr().err


def run_job_for_objective(overrides: list[str], out_dir: Path) -> float:
    """One job through the Python API's path (exit_on_failure=False): it returns the
    objective, NaN for a run that diverged or failed, instead of ending the process."""
    cfg = compose_config(overrides)
    return run(cfg, JobContext(output_dir=out_dir, overrides=list(overrides),
                               exit_on_failure=False))


# --- what a run leaves behind ---------------------------------------------------------------


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl: one dict per epoch."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def all_finite(state: dict) -> bool:
    """Every floating-point tensor of a state dict is finite."""
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


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


# --- errors ---------------------------------------------------------------------------------


def error_chain(exc: BaseException) -> str:
    """An exception's message with its causes, as Hydra prints it on the command line."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def assert_one_clear_error(code, err: str, *needles: str) -> str:
    """Exit 2, exactly one "convexp: error: ..." line on stderr, no traceback, and the line
    names every needle (the field or file, and what was expected). Returns the line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, expected 2; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("convexp: error: "), (
        f"expected one 'convexp: error:' line, got:\n{err}")
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in the message: {lines[0]}"
    return lines[0]


def assert_no_result(out_dir: Path) -> None:
    """Nothing that looks like a finished run: at most a summary.json that does not say
    completed, no checkpoint, no metrics."""
    summary = out_dir / "summary.json"
    if summary.exists():
        status = json.loads(summary.read_text())["status"]
        assert status != "completed", f"a failed job left summary status {status!r}"
    if out_dir.exists():
        assert not list(out_dir.rglob("*.pt")), "a failed job left a checkpoint"
        assert not (out_dir / "metrics.jsonl").exists(), "a failed job left metrics.jsonl"


# --- the quick loop ---------------------------------------------------------------------------

# Module fixtures that train or run several convexp processes before their first test: every
# test that uses one is `slow`, so `pytest -m "not slow"` (the quick loop) never pays for them.
SLOW_FIXTURES = {"cli", "results", "book_run", "interrupted_run", "bad_cli", "variant_runs",
                 "repro_runs", "basic_sweep", "made_dirs", "sweep_report"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def refused(tmp_path, capsys, monkeypatch):
    """Run one job (FAST_RUN + overrides) into tmp_path/run, training forbidden: returns
    (exit code, stderr)."""
    def job(overrides: list[str]) -> tuple[int, str]:
        return run_job_until_exit(overrides, tmp_path / "run", capsys,
                                  forbid_training=monkeypatch)

    return job
