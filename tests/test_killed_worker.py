"""A killed worker does not sink the sweep (issue 18, point 4).

A 4-job sweep; once the jobs run, one worker process gets SIGKILL (as the OOM killer sends it).
The sweep goes on: the dead worker's job is recorded `failed` with the signal in its reason, the
other three complete, the count line and the comparison report are written, and the sweep exits
1. For hydra/launcher=joblib (two jobs at a time) and hydra/launcher=submitit_local (whose jobs'
processes run under convexp.reaper, which tells the sweep the signal that submitit's controller
keeps to itself).

And a 3-job sweep whose middle job sends its own process a signal as its model is built (a
model named by `_target_`, examples/my_models.py's tiny_net otherwise): no polling, no timing.
SIGKILL: that job is recorded `failed`, its reason naming SIGKILL. SIGTERM, which a job catches:
that job records itself `interrupted` (stopped before training), and the sweep keeps it so.

And the reaper on its own (quick): its child's status, the line it writes, the signals it
passes on, and no child outliving it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_RUN, cli_command, cli_env

from convexp import reaper
from convexp.reaper import exit_reason

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SWEEP = [*FAST_RUN, "data.train_size=1000", "seed=0,1,2,3"]
LAUNCHERS = {
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "spawn_main"),
    "submitit_local": (["hydra/launcher=submitit_local"], "submitit.core._submit"),
}
REAPER = "convexp.reaper"  # its command line names the job's too; the job is its child


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child in Path("/proc").glob(f"{parent}/task/*/children"):
            for text in child.read_text().split():
                found.append(int(text))
                todo.append(int(text))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_killed_worker_fails_only_its_job(launcher, tmp_path):
    pytest.importorskip({"joblib": "hydra_plugins.hydra_joblib_launcher",
                         "submitit_local": "hydra_plugins.hydra_submitit_launcher"}[launcher])
    args, worker_mark = LAUNCHERS[launcher]
    sweep_dir = tmp_path / "multirun"
    with open(tmp_path / "output.txt", "w") as out:
        proc = subprocess.Popen(cli_command([*SWEEP, *args], tmp_path, multirun=True),
                                cwd=tmp_path, env=cli_env(tmp_path), stdout=out,
                                stderr=subprocess.STDOUT)
    killed = None
    try:
        deadline = time.monotonic() + 1500
        while killed is None:
            assert proc.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no job started"
            if list(sweep_dir.glob("*/summary.json")):  # the jobs run
                workers = [p for p in descendants(proc.pid)
                           if worker_mark in cmdline(p) and REAPER not in cmdline(p)]
                if workers:
                    killed = workers[0]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
        rc = proc.wait(timeout=3000)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "output.txt").read_text()
    assert rc == 1, f"exit {rc}\n{output[-4000:]}"
    assert "TerminatedWorkerError" not in output and "Traceback" not in output, output[-4000:]
    assert re.search(r"^sweep done: 4 jobs, 3 completed, 1 failed, 0 diverged, 0 interrupted",
                     output, re.M), output[-4000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    assert len(summaries) == 4
    failed = [s for s in summaries if s["status"] != "completed"]
    assert len(failed) == 1 and failed[0]["status"] == "failed", failed
    assert "killed by signal 9 (SIGKILL)" in failed[0]["reason"], failed[0]
    assert "comparison report:" in output, output[-2000:]
    assert list(sweep_dir.glob("**/comparison.md"))


KILLER = """
import os
import signal

from my_models import tiny_net


def net(cfg, image_shape, num_classes):
    if cfg.width == 16:
        os.kill(os.getpid(), signal.Signals[cfg.signal])
    return tiny_net(cfg, image_shape=image_shape, num_classes=num_classes)
"""
KILLER_YAML = """
_target_: killer.net
name: killer
width: 8
dilation: 2
signal: SIGKILL
"""
# signal -> (the count line's counts, the signalled job's status and reason)
SELF_SIGNALLED = {
    "SIGKILL": ("2 completed, 1 failed, 0 diverged, 0 interrupted",
                "failed", exit_reason(-signal.SIGKILL)),
    "SIGTERM": ("2 completed, 0 failed, 0 diverged, 1 interrupted",
                "interrupted", "stopped by a signal before training"),
}


@pytest.mark.slow
@pytest.mark.parametrize("sig", list(SELF_SIGNALLED))
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_job_that_signals_itself_ends_only_itself(launcher, sig, tmp_path):
    pytest.importorskip({"joblib": "hydra_plugins.hydra_joblib_launcher",
                         "submitit_local": "hydra_plugins.hydra_submitit_launcher"}[launcher])
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "killer.yaml").write_text(KILLER_YAML)
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), str(EXAMPLES), *filter(None, [env.get("PYTHONPATH")])])
    args = ["--config-dir", str(tmp_path / "conf"), "model=killer", f"model.signal={sig}",
            *FAST_RUN, "data.train_size=1000", "model.width=8,16,12", *LAUNCHERS[launcher][0]]
    proc = subprocess.run(cli_command(args, tmp_path, multirun=True), cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=3000)
    output = proc.stdout
    counts, status, reason = SELF_SIGNALLED[sig]
    assert proc.returncode == 1, f"exit {proc.returncode}\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]
    assert re.search(rf"^sweep done: 3 jobs, {counts} ", output, re.M), output[-4000:]
    summaries = [json.loads(p.read_text())
                 for p in sorted((tmp_path / "multirun").glob("*/summary.json"))]
    assert len(summaries) == 3, summaries
    ended = [s for s in summaries if "model.width=16" in s["overrides"]]
    assert len(ended) == 1 and ended[0]["status"] == status, summaries
    assert ended[0]["reason"] == reason, ended[0]
    if sig == "SIGKILL":
        assert "killed by signal 9 (SIGKILL)" in reason
    assert all(s["status"] == "completed" for s in summaries if s is not ended[0]), summaries
    assert "comparison report:" in output, output[-2000:]


# --- the reaper on its own ---------------------------------------------------------------------

needs_reaper = pytest.mark.skipif(not reaper.available(), reason="no sigwaitinfo here")


def reaped(code: str, **kwargs) -> subprocess.Popen:
    """`python -m convexp.reaper -c CODE`: the reaper running `python -c CODE`."""
    return subprocess.Popen([sys.executable, "-m", "convexp.reaper", "-c", code], text=True,
                            **kwargs)


@needs_reaper
def test_the_reaper_says_which_signal_killed_its_child(tmp_path):
    log = tmp_path / "0_log.err"
    with open(log, "w") as err:  # as submitit's controller opens the job's log
        proc = reaped("import os, signal, sys; sys.stderr.write('50%|#####     \\r'); "
                      "sys.stderr.flush(); os.kill(os.getpid(), signal.SIGKILL)", stderr=err)
        assert proc.wait() == 128 + signal.SIGKILL
    assert reaper.status_in(log) == -signal.SIGKILL, log.read_text()
    assert "killed by signal 9, SIGKILL" in log.read_text()
    assert exit_reason(reaper.status_in(log)) == (
        "its worker process was killed by signal 9 (SIGKILL)")


@needs_reaper
@pytest.mark.parametrize("code", [0, 1, 144])  # 144: submitit's local requeue
def test_the_reaper_exits_as_its_child_did(code, tmp_path):
    log = tmp_path / "0_log.err"
    with open(log, "w") as err:
        assert reaped(f"raise SystemExit({code})", stderr=err).wait() == code
    assert reaper.status_in(log) == (code or None), log.read_text()


@needs_reaper
def test_the_reaper_passes_a_signal_on_to_its_child():
    proc = reaped("import signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
                  "print('ready', flush=True)\n"
                  "time.sleep(600)", stdout=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 3


@needs_reaper
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_no_child_outlives_its_reaper():
    """The reaper killed outright (submitit's controller ends a job with SIGKILL) takes its
    child with it. The child holds the pipe's write end: EOF says it is gone."""
    proc = reaped("import time\nprint('ready', flush=True)\ntime.sleep(120)\nprint('survived')",
                  stdout=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n"
    proc.kill()
    proc.wait()
    assert proc.stdout.read() == ""


@pytest.mark.parametrize("launcher, target", [
    ("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"), ("slurm", "SlurmLauncher"),
])
def test_each_launcher_name_is_convexps(launcher, target):
    """hydra/launcher=slurm too: a job OOM-killed on the cluster is recorded, not raised (the
    same code path as submitit_local's, with Slurm's executor)."""
    pytest.importorskip({"joblib": "hydra_plugins.hydra_joblib_launcher"}.get(
        launcher, "hydra_plugins.hydra_submitit_launcher"))
    from hydra import compose, initialize_config_dir

    import hydra_plugins.convexp_launchers.launchers as ours
    from convexp.launcher_configs import quiet_launcher_schema_warning
    from convexp.paths import CONFIG_DIR

    quiet_launcher_schema_warning()  # as convexp's entry point does
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == f"{ours.__name__}.{target}"
    assert hasattr(ours, target)
