"""A user's own model, outside convexp, named by `_target_` and run from the command line.

examples/my_models.py holds the model (a small ghost-conv net), examples/conf/model/tiny_net.yaml
names it (`_target_: my_models.tiny_net`). Each run here is `python -m convexp` in a
subprocess, started in a temporary dir (not the repository), with `--config-dir` pointing at
examples/conf and `PYTHONPATH=examples`, as the README tells a user to run it. The joblib and
submitit sweeps prove that the launchers' worker processes import `my_models` too.

One debug epoch took tiny_net to 0.61-0.67 test accuracy over seeds 0-2 when measured with
the earlier debug=fast (2,000 training images, 15 steps; chance: 0.1), so 0.4 is the bar; the
current preset (8,000 images, 125 steps) trains it further.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import cli_env, read_summary
from omegaconf import OmegaConf

from convexp.introspect import describe

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CONFIG_DIR = EXAMPLES / "conf"
MODEL = ["--config-dir", str(CONFIG_DIR), "model=tiny_net", "debug=fast",
         "trainer.progress=false"]
SWEEP = [*MODEL, "seed=0,1"]
MIN_TEST_ACC = 0.4
TIMEOUT_S = 2000
RATIOS = ("param_ratio_vs_standard", "macs_ratio_vs_standard")
DONE_LINE = re.compile(r"^sweep done: 2 jobs, 2 completed, 0 failed, 0 diverged, "
                       r"0 interrupted \(", re.M)


def convexp(args: list[str], tmp_path: Path, *, multirun: bool = False,
            pythonpath: bool = True) -> subprocess.CompletedProcess:
    """`python -m convexp [-m] ARGS` in tmp_path, with examples/ on PYTHONPATH (or, with
    pythonpath=False, certainly not on it)."""
    env = cli_env(tmp_path)
    others = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
              if p and Path(p).resolve() != EXAMPLES]
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), *others] if pythonpath else others)
    out = (f"hydra.sweep.dir={tmp_path / 'multirun'}" if multirun
           else f"hydra.run.dir={tmp_path / 'run'}")
    cmd = [sys.executable, "-m", "convexp", *(["-m"] if multirun else []), *args, out]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"


def user_model_report():
    """The per-layer report of examples/my_models.py's tiny_net with the YAML's fields, built
    here without putting examples/ on this process's sys.path."""
    spec = importlib.util.spec_from_file_location("_user_my_models", EXAMPLES / "my_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "tiny_net.yaml")
    return describe(module.tiny_net(cfg, image_shape=(1, 28, 28), num_classes=10), (1, 28, 28))


# name -> (arguments, multirun); each is the fixture `<name>_run`.
RUNS = {
    "joblib": ([*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], True),
    "submitit": ([*SWEEP, "hydra/launcher=submitit_local"], True),
    "single": (MODEL, False),
}


class Runs:
    """The runs, each in its own dir, in background threads: on 2 cores most of a run's wall
    time is start-up (imports, data, launcher polling), which overlaps well."""

    def __init__(self, root: Path):
        self.root, self.futures = root, {}
        self.pool = ThreadPoolExecutor(len(RUNS))

    def start(self, name: str) -> None:
        if name not in self.futures:
            args, multirun = RUNS[name]
            run_dir = self.root / name
            run_dir.mkdir()
            self.futures[name] = (self.pool.submit(convexp, args, run_dir, multirun=multirun),
                                  run_dir)

    def get(self, name: str) -> tuple[subprocess.CompletedProcess, Path]:
        self.start(name)
        future, run_dir = self.futures[name]
        return future.result(), run_dir


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Starts together the runs that the selected tests need, as soon as one is asked for."""
    started = Runs(tmp_path_factory.mktemp("user_model"))
    for item in request.session.items:
        for name in RUNS:
            if getattr(item, "module", None) is request.module and (
                    f"{name}_run" in getattr(item, "fixturenames", ())):
                started.start(name)
    yield started
    started.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def joblib_run(runs):
    return runs.get("joblib")


@pytest.fixture(scope="module")
def submitit_run(runs):
    return runs.get("submitit")


@pytest.fixture(scope="module")
def single_run(runs):
    return runs.get("single")


def check_summary(summary: dict, expected) -> None:
    """A completed run of the user's model: its own params, MACs and receptive field, a test
    accuracy well above chance, and no ratio to convexp's standard net (that comparison only
    means something for convexp's own variants)."""
    assert summary["status"] == "completed", summary
    assert summary["model"] == "tiny_net"
    assert summary["params"] == expected.params
    assert summary["macs"] == expected.macs
    assert summary["receptive_field"] == expected.receptive_field
    assert summary["test_acc"] > MIN_TEST_ACC, summary
    for key in RATIOS:
        assert key not in summary


def check_sweep(proc: subprocess.CompletedProcess, sweep_dir: Path, launcher: str) -> None:
    assert proc.returncode == 0, output(proc)
    assert DONE_LINE.search(proc.stdout), output(proc)
    expected = user_model_report()
    jobs = {job: read_summary(sweep_dir / job) for job in ("0", "1")}
    assert {s["seed"] for s in jobs.values()} == {0, 1}
    for job, summary in jobs.items():
        check_summary(summary, expected)
        hydra_cfg = OmegaConf.load(sweep_dir / job / ".hydra" / "hydra.yaml")
        assert launcher in hydra_cfg.hydra.launcher._target_  # the launcher really ran it


@pytest.mark.slow
def test_joblib_sweep(joblib_run):
    proc, tmp = joblib_run
    check_sweep(proc, tmp / "multirun", "JoblibLauncher")


@pytest.mark.slow
def test_submitit_local_sweep(submitit_run):
    proc, tmp = submitit_run
    check_sweep(proc, tmp / "multirun", "LocalLauncher")


@pytest.mark.slow
def test_single_run(single_run):
    proc, tmp = single_run
    assert proc.returncode == 0, output(proc)
    check_summary(read_summary(tmp / "run"), user_model_report())


@pytest.mark.parametrize("args, pythonpath, names", [
    # the user's module is not on the path (the README's PYTHONPATH=examples forgotten)
    ([], False, ["my_models.tiny_net", "my_models", "PYTHONPATH"]),
    # the module imports, but has no such builder
    (["model._target_=my_models.no_such_net"], True, ["my_models.no_such_net", "no_such_net"]),
], ids=["module_not_on_pythonpath", "no_such_builder"])
def test_unimportable_target_fails_in_one_line(tmp_path, args, pythonpath, names):
    proc = convexp([*MODEL, *args], tmp_path, pythonpath=pythonpath)
    assert proc.returncode == 2, output(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convexp: error: model._target_="), output(proc)
    for name in names:
        assert name in lines[0], output(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout, output(proc)  # no log lines besides the one error line
