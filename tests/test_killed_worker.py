"""A killed worker does not sink the sweep (issue 18, point 4).

A 4-job sweep; once the jobs run, one worker process gets SIGKILL (as the OOM killer sends it).
The sweep goes on: the dead worker's job is recorded `failed` (with the signal in its reason
under joblib; submitit does not pass it on), the other three complete, the count line and the
comparison report are written, and the sweep exits 1. For hydra/launcher=joblib (two jobs at a
time) and hydra/launcher=submitit_local.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FAST_RUN, cli_command, cli_env

SWEEP = [*FAST_RUN, "data.train_size=1000", "seed=0,1,2,3"]
LAUNCHERS = {
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "spawn_main"),
    "submitit_local": (["hydra/launcher=submitit_local"], "submitit.core._submit"),
}


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
                workers = [p for p in descendants(proc.pid) if worker_mark in cmdline(p)]
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
    # submitit's local controller reaps the job's process and exits 0 whatever happened to
    # it, so only joblib's reason can name the signal.
    expected = "signal 9 (SIGKILL)" if launcher == "joblib" else "without a result"
    assert expected in failed[0]["reason"], failed[0]
    assert "comparison report:" in output, output[-2000:]
    assert list(sweep_dir.glob("**/comparison.md"))
