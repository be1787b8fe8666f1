"""A full disk never leaves a run `running`: whichever of its files cannot be written (metrics,
summary, checkpoint, ERF arrays and image), the run ends `failed` with the file and the cause in
its summary.json, written with the room the job reserved when it started, and no traceback.

The first tests run everywhere: the disk "fills" at one write of one file (the OS-level call
raises ENOSPC, as a full filesystem does) and room comes back when the job frees its reserve.
The last one fills a real 30 MB tmpfs from outside with the run in it; it needs root and
mount, and skips elsewhere.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_RUN, cli_env, read_summary

import convexp.atomic
import convexp.task
from convexp.api import train
from convexp.job import RESERVE

TWO_EPOCHS = [*FAST_RUN, "trainer.max_epochs=2", "data.train_size=512", "data.test_size=256",
              "data.val_size=256"]


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("target, nth", [
    ("metrics.jsonl", 2),  # epoch 2, during training
    ("metrics.jsonl", 3),  # the final write, after the test set
    ("last.pt", 2),
    ("summary.json", 2),  # the summary written when setup ends
    ("erf.npy", 1),
    ("erf.png", 1),
])
def test_a_full_disk_at_any_write_ends_the_run_failed(target, nth, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    writes: Counter = Counter()

    def disk_full(name: str) -> bool:
        """The disk fills at the nth write of `target`; the job's reserve, once freed, makes
        room again."""
        writes[name] += 1
        return name == target and writes[name] >= nth and (run_dir / RESERVE).exists()

    real_replace, real_save, real_png = os.replace, np.save, convexp.task.save_erf_png

    def replace(src, dst):
        if disk_full(Path(dst).name):
            raise no_space(dst)
        return real_replace(src, dst)

    def save(path, array, *args, **kwargs):
        if disk_full(Path(path).name):
            raise no_space(path)
        return real_save(path, array, *args, **kwargs)

    def save_png(erf, path, *args, **kwargs):
        if disk_full(Path(path).name):
            raise no_space(path)
        return real_png(erf, path, *args, **kwargs)

    monkeypatch.setattr(convexp.atomic.os, "replace", replace)
    monkeypatch.setattr(convexp.task.np, "save", save)
    monkeypatch.setattr(convexp.task, "save_erf_png", save_png)
    summary = train(TWO_EPOCHS, run_dir)
    assert writes[target] >= nth, f"{target} was written {writes[target]} times"
    assert summary["status"] == "failed", summary
    assert "no space left on device" in summary["reason"], summary["reason"]
    assert str(run_dir / target) in summary["reason"] or target in summary["reason"]
    if target != "summary.json":  # that one fails before training
        assert summary["epochs_completed"] >= 1
    assert read_summary(run_dir) == summary
    assert not (run_dir / RESERVE).exists(), "the reserve was left behind"
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


# --- a real full filesystem ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 30 MB tmpfs at tmp_path/disk (root and mount only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> None:
    """Fill the filesystem from outside the run, as `dd if=/dev/zero of=disk/fill` would."""
    with open(disk / "fill", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    # the last partial block too
    try:
        with open(disk / "fill-tail", "wb") as f:
            while True:
                f.write(bytes(4096))
                f.flush()
    except OSError:
        pass


@pytest.mark.slow
def test_a_real_full_disk_after_epoch_1_ends_the_run_failed(small_disk, tmp_path):
    run_dir = small_disk / "run"
    cmd = [sys.executable, "-m", "convexp", *FAST_RUN, "trainer.max_epochs=3",
           f"hydra.run.dir={run_dir}"]
    with open(tmp_path / "output.txt", "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=out,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 1500
        while not ((run_dir / "metrics.jsonl").exists() and
                   (run_dir / "checkpoints" / "last.pt").exists()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.05)
        fill(small_disk)
        _, err = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "output.txt").read_text() + err
    assert proc.returncode == 1, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convexp: run failed: could not write"), err
    summary = read_summary(run_dir)
    assert summary["status"] == "failed", summary
    assert "no space left on device" in summary["reason"] and str(run_dir) in summary["reason"]
    assert summary["epochs_completed"] >= 1
