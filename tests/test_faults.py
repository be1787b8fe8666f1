"""Faults during a run: divergence, interruption and resume, crashes mid-write, W&B failures.

A fault must never lose or corrupt what is on disk: the last good checkpoint, metrics.jsonl and
summary.json stay readable and say what happened (status diverged | interrupted | failed).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    FAST_RUN,
    all_finite,
    cli_command,
    cli_env,
    read_metrics,
    read_summary,
    run_cli,
    run_job_for_objective,
    run_job_until_exit,
    start_cli,
    wandb_inspect,
)

import convexp.runner
from convexp.atomic import atomic_write, atomic_write_json, atomic_write_text
from convexp.checkpoint import load_checkpoint, save_checkpoint

# A two-epoch in-process run that takes a second or two: 3 steps of 64 images per epoch.
TINY_SIZES = ["data.train_size=192", "data.val_size=64", "data.test_size=64",
              "data.batch_size=64", "trainer.max_epochs=2"]
TINY = [*FAST_RUN, *TINY_SIZES]


def stray_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --- divergence -----------------------------------------------------------------------------

ABSURD_LR = ["optimizer=sgd", "optimizer.lr=1e6", "scheduler=none"]


@pytest.mark.slow
def test_absurd_lr_diverges_in_summary_and_wandb(tmp_path):
    """SGD at lr 1e6 makes the loss non-finite within the first epoch (verified: by step 7 of
    7). The job says so in summary.json and in W&B, and keeps no non-finite weights."""
    proc = run_cli([*FAST_RUN, *ABSURD_LR, "logger=wandb"], tmp_path)
    run_dir = tmp_path / "run"
    summary = read_summary(run_dir)
    assert summary["status"] == "diverged", (summary, proc.stderr[-3000:])
    assert "non-finite" in summary["reason"]
    assert proc.returncode == 1 and "run diverged" in proc.stderr, proc.stderr[-3000:]
    assert summary["test_acc"] is None
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.exists():  # nothing good was ever trained: any checkpoint must be finite
        assert all_finite(load_checkpoint(ckpt)["model"])
    wb = wandb_inspect(run_dir)
    assert wb["summary"]["status"] == "diverged", wb["summary"]
    assert "non-finite" in wb["summary"]["reason"]


# Epoch 1 warms up linearly to lr 0.05 (8 steps of 64 images); in epoch 2 the cosine "decay"
# runs towards min_lr=1e6, i.e. the lr explodes and the loss turns non-finite (verified) before
# the epoch ends.
DIVERGE_IN_EPOCH_2 = [
    *FAST_RUN, "data.train_size=512", "data.val_size=200", "data.test_size=200",
    "data.batch_size=64", "trainer.max_epochs=2", "optimizer=sgd", "optimizer.lr=0.05",
    "scheduler=cosine", "scheduler.warmup_steps=8", "scheduler.min_lr=1e6",
]


@pytest.fixture(scope="module")
def diverged_in_epoch_2(tmp_path_factory):
    out = tmp_path_factory.mktemp("diverged") / "run"
    objective = run_job_for_objective(DIVERGE_IN_EPOCH_2, out)
    return objective, out


def test_divergence_keeps_last_good_checkpoint(diverged_in_epoch_2):
    _, run_dir = diverged_in_epoch_2
    summary = read_summary(run_dir)
    assert summary["status"] == "diverged", summary
    assert summary["epochs_completed"] == 1 and summary["steps"] > 8
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1]
    assert all(math.isfinite(m[k]) for m in metrics for k in ("train_loss", "val_loss"))
    ckpt = load_checkpoint(run_dir)
    assert ckpt["progress"]["epoch"] == 1 and ckpt["progress"]["global_step"] == 8
    assert all_finite(ckpt["model"]), "the kept checkpoint holds non-finite weights"
    assert not stray_temp_files(run_dir)


def test_diverged_run_returns_nan_objective(diverged_in_epoch_2):
    objective, _ = diverged_in_epoch_2
    assert math.isnan(objective), objective


def test_nonfinite_weights_after_last_step_never_checkpointed(tmp_path, monkeypatch):
    """Fault injection: the 6th optimizer step (the last of epoch 2, 3 steps per epoch) leaves
    NaN weights, as a blow-up in an epoch's last update does (reproduced without injection
    by one-step epochs at sgd lr 1e6..1e10)."""
    build = convexp.runner.build_optimizer

    def poisoned_optimizer(cfg, params, device):
        optimizer = build(cfg, params, device)
        real_step, calls = optimizer.step, []

        def step(*args, **kwargs):
            out = real_step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 6:
                with torch.no_grad():
                    for group in optimizer.param_groups:
                        for p in group["params"]:
                            p.fill_(float("nan"))
            return out

        optimizer.step = step
        return optimizer

    monkeypatch.setattr(convexp.runner, "build_optimizer", poisoned_optimizer)
    run_dir = tmp_path / "run"
    run_job_for_objective([*TINY, "optimizer=sgd", "scheduler=none"], run_dir)
    assert read_summary(run_dir)["status"] == "diverged"
    ckpt = load_checkpoint(run_dir)
    assert ckpt["progress"]["epoch"] == 1
    assert all_finite(ckpt["model"])


# --- interruption and resume ----------------------------------------------------------------

# Two epochs of FAST_RUN's 2,000 images (16 steps of 128 each): a few seconds per epoch
# on 2 cores, time enough for the signal sent as epoch 1 ends to land early in epoch 2.
RESUMABLE = [*FAST_RUN, "trainer.max_epochs=2"]
TIMING = ("epoch_time_s", "train_samples_per_s")


def wait_for_epoch(proc: subprocess.Popen, metrics: Path, timeout: float = 1500) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().strip():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before its first epoch")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no epoch finished in time")


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    base_tmp, int_tmp = tmp_path / "baseline", tmp_path / "interrupted"
    res_tmp = tmp_path / "resumed"
    # The uninterrupted baseline runs alongside (same config and seed; logger=none only
    # changes what goes to W&B, not a single number).
    baseline = start_cli([*RESUMABLE, "logger=none"], base_tmp)
    interrupted = start_cli([*RESUMABLE, "logger=wandb"], int_tmp)
    try:
        wait_for_epoch(interrupted, int_tmp / "run" / "metrics.jsonl")
        interrupted.send_signal(signal.SIGTERM)  # early in epoch 2
        rc = interrupted.wait(timeout=1500)
        assert baseline.wait(timeout=3000) == 0, (base_tmp / "output.txt").read_text()[-3000:]
    finally:
        for proc in (baseline, interrupted):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = (int_tmp / "output.txt").read_text()
    assert rc == 128 + signal.SIGTERM, f"exit {rc}\n{output[-3000:]}"
    int_dir = int_tmp / "run"
    summary = read_summary(int_dir)
    assert summary["status"] == "interrupted", summary
    assert f"resume={int_dir}" in summary["reason"]
    ckpt = load_checkpoint(int_dir)
    assert ckpt["progress"]["epoch"] == 1, "the signal should land in epoch 2"
    assert ckpt["progress"]["step_in_epoch"] >= 1 and ckpt["progress"]["partial"], (
        "the interrupted checkpoint should be mid-epoch")
    assert [m["epoch"] for m in read_metrics(int_dir)] == [1]

    # A resumed run continues in its own run dir, with the config its checkpoint recorded.
    res_tmp.mkdir()
    run_cli([f"resume={int_dir}"], res_tmp, run_dir=False, check_rc=0)
    written = [p.name for p in res_tmp.iterdir() if not p.name.startswith("wandb-")]
    assert written == [], "the resumed run wrote outside its own run dir"
    base_dir = base_tmp / "run"
    resumed, base = read_summary(int_dir), read_summary(base_dir)
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 1
    for key in ("test_acc", "test_loss", "best_val_acc", "final_val_acc", "final_train_loss",
                "final_train_acc", "steps", "epochs_completed"):
        assert resumed[key] == base[key], f"{key}: resumed {resumed[key]} != {base[key]}"

    def untimed(run_dir):
        return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run_dir)]

    assert untimed(int_dir) == untimed(base_dir)
    weights = load_checkpoint(int_dir)["model"]
    base_weights = load_checkpoint(base_dir)["model"]
    assert weights.keys() == base_weights.keys()
    for name, tensor in base_weights.items():
        assert torch.equal(weights[name], tensor), f"{name} differs after resuming"

    # The resumed job continues the same W&B run: a second offline run dir with its id.
    run_id = summary["wandb_run_id"]
    assert resumed["wandb_run_id"] == run_id
    offline = list((int_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{run_id}") for p in offline), offline


def test_sigterm_during_setup_leaves_interrupted_summary(tmp_path):
    proc = start_cli([*FAST_RUN, "logger=wandb"], tmp_path)
    try:
        # Hydra writes .hydra/overrides.yaml just before it calls convexp's task function;
        # setup (data, model summary, W&B init) then takes seconds.
        deadline = time.monotonic() + 300
        while not (tmp_path / "run" / ".hydra" / "overrides.yaml").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "run" / "summary.json").exists(), f"no summary.json (exit {rc})"
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
    assert rc == 128 + signal.SIGTERM


# Two Ctrl-C as the first epoch is recorded, sent by the process to itself so that the second
# surely lands before the first has stopped the run (two signals sent from outside may arrive
# as one). Everything else is `python -m convexp` as a user runs it.
TWO_CTRL_C = """
import os, signal, sys
import convexp.job
from convexp.__main__ import main

write_metrics = convexp.job.Job.write_metrics

def write_then_interrupt(self, history):
    write_metrics(self, history)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)

convexp.job.Job.write_metrics = write_then_interrupt
sys.argv = ["convexp", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
    cmd = cli_command([*FAST_RUN, "trainer.max_epochs=3"], tmp_path)
    proc = subprocess.run([cmd[0], "-c", TWO_CTRL_C, *cmd[3:]], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=1500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 128 + signal.SIGINT, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("convexp:")]
    assert len(lines) == 1 and "second Ctrl-C" in lines[0], output[-3000:]
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and "second Ctrl-C" in summary["reason"]
    assert summary["epochs_completed"] == 1


# --- atomic writes --------------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("error", [Crash, KeyboardInterrupt])
def test_atomic_write_crash_midway_keeps_old_file(error, tmp_path):
    target = tmp_path / "summary.json"
    target.write_text('{"status": "completed"}\n')

    def half_then_crash(f):
        f.write(b'{"status": "fai')
        f.flush()
        raise error("crash in the middle of the write")

    with pytest.raises(error):
        atomic_write(target, half_then_crash)
    assert target.read_text() == '{"status": "completed"}\n'
    assert sorted(tmp_path.iterdir()) == [target], "a temporary file was left behind"


def test_atomic_write_crash_on_new_file_leaves_nothing(tmp_path):
    def crash(f):
        f.write(b"partial")
        raise Crash()

    with pytest.raises(Crash):
        atomic_write(tmp_path / "sub" / "metrics.jsonl", crash)
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_write_text_and_json_complete(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    atomic_write_text(tmp_path / "a.txt", "new text\n")
    atomic_write_json(tmp_path / "b.json", {"status": "completed", "path": tmp_path})
    assert (tmp_path / "a.txt").read_text() == "new text\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {
        "status": "completed", "path": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_save_checkpoint_crash_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "progress": {"epoch": 1}})
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "progress": {"epoch": 2}})
    assert path.read_bytes() == before
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.ones(3)) and ckpt["progress"]["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_write_fails_mid_run(tmp_path, monkeypatch, capsys):
    """The disk fills up while epoch 2's checkpoint is written: the job ends as failed
    (exit 1), says why and where, keeps its progress figures, and epoch 1's checkpoint stays
    intact."""
    real_save, calls = torch.save, []

    def save_then_fill_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_disk)
    run_dir = tmp_path / "run"
    code, err = run_job_until_exit(TINY_SIZES, run_dir, capsys)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert code == 1 and "run failed" in err and "no space left on device" in err, err
    summary = read_summary(run_dir)
    assert summary["status"] == "failed", summary
    assert "no space left on device" in summary["reason"] and str(checkpoint) in summary["reason"]
    # Epoch 2 trained and was validated before its checkpoint failed: the record says so,
    # while the kept checkpoint is epoch 1's, whole.
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert summary["epochs_completed"] == 2
    assert summary["best_val_acc"] == max(m["val_acc"] for m in metrics)
    assert summary["test_acc"] is None
    ckpt = load_checkpoint(run_dir)
    assert ckpt["progress"]["epoch"] == 1 and all_finite(ckpt["model"])
    assert [m["epoch"] for m in ckpt["progress"]["history"]] == [1]
    assert not stray_temp_files(run_dir)


def test_atomic_write_keeps_normal_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "plain.json").write_text("{}")
        atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old_umask)
    expected = (tmp_path / "plain.json").stat().st_mode & 0o777
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == expected


# --- W&B failures ---------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_unreachable_never_stops_a_run(tmp_path):
    """logger.mode=online with no credentials and an unreachable server (a quick probe finds
    it so): the run falls back to an offline W&B run, says so and how to upload it, training
    completes and every local file is written."""
    env = cli_env(tmp_path)
    env.pop("WANDB_MODE")
    env.update({"WANDB_BASE_URL": "http://127.0.0.1:9", "HOME": str(tmp_path)})
    cmd = cli_command([*FAST_RUN, "trainer.max_steps=2", "logger=wandb", "logger.mode=online"],
                      tmp_path)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "W&B online unavailable: http://127.0.0.1:9 is unreachable" in output, output[-3000:]
    assert "log offline" in output and "wandb sync" in output, output[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "no offline fallback run"
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["test_acc"] is not None
    assert read_metrics(tmp_path / "run")
    assert load_checkpoint(tmp_path / "run")["progress"]["epoch"] == 1


class FakeSummary(dict):
    def __init__(self, fail: bool):
        super().__init__()
        self.fail = fail

    def update(self, values):
        if self.fail:
            raise ConnectionError("simulated: W&B summary update failed")
        super().update(values)


class FakeRun:
    """Stands in for wandb.Run; fails at one chosen point."""

    def __init__(self, fail: str):
        self.fail, self.dir = fail, "."
        self.logged: list[dict] = []
        self.finish_calls = 0
        self.summary = FakeSummary(fail == "summary")

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data, commit=None):
        if self.fail == "log" and self.logged:  # the first epoch goes through, then not
            raise ConnectionError("simulated: network gone mid-run")
        self.logged.append(data)

    def log_artifact(self, artifact, aliases=None):
        if self.fail == "artifact":
            raise ConnectionError("simulated: artifact upload failed")

    def finish(self, exit_code=0):
        self.finish_calls += 1
        if self.fail == "finish":
            raise ConnectionError("simulated: W&B finish failed")


@pytest.mark.parametrize("fail", ["init", "log", "summary", "artifact", "finish"])
def test_wandb_error_never_crashes_a_run(fail, tmp_path, monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")
    runs = []

    def fake_init(**kwargs):
        if fail == "init":
            raise ConnectionError("simulated: cannot reach W&B")
        runs.append(FakeRun(fail))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # the logger sets it
    run_dir = tmp_path / "run"
    objective = run_job_for_objective([*TINY, "logger=wandb", "logger.mode=offline"], run_dir)
    assert math.isfinite(objective)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["test_acc"] is not None
    assert [m["epoch"] for m in read_metrics(run_dir)] == [1, 2]
    assert load_checkpoint(run_dir)["progress"]["epoch"] == 2
    assert any("W&B" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    if fail == "log":
        assert len(runs[0].logged) == 1, "the first epoch should have reached W&B"
    if fail != "init":
        # Also after a failed call: an unfinished run would be reused by the next job.
        assert runs[0].finish_calls == 1
