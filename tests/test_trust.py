"""Every recorded result comes from the config it records, and no run is lost.

Fields that do not apply to the chosen option are refused, a resumed run trains the config its
checkpoint recorded and records it, two runs never share a directory, bad input is one line and
exit 2, a full disk ends a run as `failed` with its progress kept, and the textbook's float
arrays train exactly as their uint8 originals do.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FAST_RUN, cli_env, read_summary, run_cli

import convexp.atomic
from convexp.api import compose_config, train
from convexp.checkpoint import load_checkpoint, save_checkpoint
from convexp.data import BUNDLED_MNIST, IDX_FILES, IMAGES_MAGIC, LABELS_MAGIC, read_idx
from convexp.errors import ConfigError, DataError

QUICK = FAST_RUN  # debug=fast on 2,000 training images


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr}"
    assert len(lines) == 1 and lines[0].startswith("convexp: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# --- 1. no field without an effect ----------------------------------------------------------


@pytest.mark.parametrize("overrides, key, schema", [
    (["model=book_cnn", "model.channels=[64]"], "channels", "BookCNNConfig"),
    (["model=book_cnn", "model.kernel_size=5"], "kernel_size", "BookCNNConfig"),
    (["optimizer=adamw", "optimizer.momentum=0.9"], "momentum", "AdamWConfig"),
    (["optimizer=sgd", "optimizer.betas=[0.9,0.99]"], "betas", "SGDConfig"),
    (["scheduler=cosine", "scheduler.pct_start=0.5"], "pct_start", "CosineConfig"),
    (["scheduler=none", "scheduler.min_lr=0.1"], "min_lr", "NoScheduleConfig"),
    (["data=npy", "data.root=/tmp", "data.verify=false"], "verify", "NpyConfig"),
    (["logger=none", "logger.project=x"], "project", "NoLoggerConfig"),
])
def test_a_field_the_option_does_not_have_fails_at_composition(overrides, key, schema):
    with pytest.raises(ConfigError) as exc:
        compose_config(overrides)
    message = str(exc.value)  # the CLI's one line
    assert f"Key '{key}' not in '{schema}'" in message, message


def test_normalisation_statistics_cannot_be_set_with_normalisation_off():
    cfg = compose_config(["experiment=textbook"])
    assert cfg.data.normalize is None
    with pytest.raises(Exception):  # noqa: B017 - Hydra/OmegaConf raise different types here
        compose_config(["experiment=textbook", "data.normalize.mean=0.5"])


def test_appended_key_is_refused_before_training(tmp_path, capsys):
    from convexp.job import JobContext
    from convexp.task import run

    cfg = compose_config([*QUICK, "+optimizer.momentum=0.9"])
    with pytest.raises(SystemExit) as exc:
        run(cfg, JobContext(output_dir=tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.count("\n") == 0, err
    assert "optimizer.momentum does not apply to optimizer=adamw" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_compile_mode_without_compiling_is_refused_where_auto_chooses_eager():
    """trainer.compile=auto (null) runs eager on the CPU: a compile_mode would do nothing."""
    import torch
    from torch import nn

    from convexp.auto import resolve_auto

    model, cpu = nn.Sequential(nn.Conv2d(1, 4, 3)), torch.device("cpu")
    cfg = compose_config(["trainer.compile_mode=max-autotune"])
    with pytest.raises(ConfigError) as exc:
        resolve_auto(cfg.trainer, cpu, model)
    assert str(exc.value) == (
        "trainer.compile_mode=max-autotune applies only when compiling, and this run does not "
        "(auto: eager, compiling is not repaid on this device (measured on CPU)): set "
        "trainer.compile=true, or drop it")
    cfg = compose_config(["trainer.compile_mode=max-autotune", "trainer.compile=true"])
    assert resolve_auto(cfg.trainer, cpu, model).compile


@pytest.fixture(scope="module")
def book_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("book")
    run_cli(["model=book_cnn", *QUICK, "logger=wandb"], tmp, check_rc=0)
    return tmp / "run"


def test_records_carry_only_the_fields_that_applied(book_run):
    summary = read_summary(book_run)
    for key in ("kernel_size", "dilation", "channels", "padding", "param_ratio_vs_standard"):
        assert key not in summary, key
    config = yaml.safe_load((book_run / ".hydra" / "config.yaml").read_text())
    assert config["model"] == {"name": "book_cnn"}
    assert "momentum" not in config["optimizer"]
    from conftest import wandb_inspect

    wandb_config = wandb_inspect(book_run)["config"]
    model = wandb_config["model"]
    model = model.get("value", model) if isinstance(model, dict) else model
    assert model == {"name": "book_cnn"}, wandb_config["model"]


# --- 2. resume runs the recorded config, and records it --------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run stopped by SIGTERM in its second epoch, with model.kernel_size=5."""
    tmp = tmp_path_factory.mktemp("interrupted")
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "convexp", *QUICK, "data.train_size=4000",
           "trainer.max_epochs=2", "model.kernel_size=5", "logger=none",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp, env=cli_env(tmp), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=1500) == 128 + signal.SIGTERM
    assert read_summary(run_dir)["status"] == "interrupted"
    return run_dir


def test_resume_refuses_overrides_that_change_what_it_trains(interrupted_run, tmp_path):
    before = (interrupted_run / "summary.json").read_text()
    proc = run_cli([f"resume={interrupted_run}", "model.kernel_size=3", "optimizer.lr=0.5"],
                   tmp_path)
    one_error_line(proc, "model.kernel_size=3", "optimizer.lr=0.5",
                   "the checkpoint has model.kernel_size=5")
    assert (interrupted_run / "summary.json").read_text() == before
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_resume_trains_and_records_the_checkpoints_config(interrupted_run, tmp_path):
    recipe = read_summary(interrupted_run)["recipe"]
    proc = run_cli([f"resume={interrupted_run}", "model.kernel_size=5",
                    "trainer.progress=false"], tmp_path, check_rc=0)
    summary = read_summary(interrupted_run)
    assert summary["status"] == "completed" and summary["kernel_size"] == 5
    assert summary["resumed_from_epoch"] == 1
    # The original run's overrides: compare pools the job with its seeds.
    assert "model.kernel_size=5" in summary["overrides"]
    assert not any(o.startswith("resume=") for o in summary["overrides"])
    # ... and its recipe, though the checkpoint's config holds the resolved precision.
    assert summary["recipe"] == recipe and len(recipe) == 12
    config = yaml.safe_load((interrupted_run / ".hydra" / "config.yaml").read_text())
    assert config["model"]["kernel_size"] == 5 and config["resume"] is None
    assert load_checkpoint(interrupted_run)["config"]["model"]["kernel_size"] == 5
    assert not (tmp_path / "outputs").exists(), "resuming made a new run dir"
    # Resuming it again says plainly that there is nothing to do.
    again = run_cli([f"resume={interrupted_run}"], tmp_path, check_rc=0)
    assert "already completed" in again.stdout + again.stderr, proc.stdout
    assert read_summary(interrupted_run) == summary
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_resume_grows_a_run_without_a_schedule_and_never_shrinks_it(tmp_path):
    """With scheduler=none, trainer.max_epochs may grow on resume (the record says the new
    length); fewer epochs than the run has would record a shorter run than was trained."""
    base = [*QUICK, "data.train_size=512", "data.val_size=128", "data.test_size=128",
            "optimizer=sgd", "scheduler=none", "logger=none"]
    run_dir = tmp_path / "run"
    run_cli([*base, "trainer.max_epochs=2"], tmp_path, check_rc=0)
    before = (run_dir / "summary.json").read_text()
    shorter = run_cli([f"resume={run_dir}", "trainer.max_epochs=1"], tmp_path, run_dir=False)
    one_error_line(shorter, "trainer.max_epochs=1", "the checkpoint has trainer.max_epochs=2",
                   "never fewer")
    assert (run_dir / "summary.json").read_text() == before
    run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], tmp_path, run_dir=False, check_rc=0)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert "trainer.max_epochs=3" in summary["overrides"]
    assert load_checkpoint(run_dir)["config"]["trainer"]["max_epochs"] == 3


def test_resume_refuses_a_preset_the_run_was_not_given(interrupted_run, tmp_path):
    """debug=fast sets keys of its own (data sizes, epochs): on a run started without it, it
    would change what the checkpoint trains."""
    run_dir = tmp_path / "copy"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = load_checkpoint(interrupted_run)
    ckpt["overrides"] = [o for o in ckpt["overrides"] if o != "debug=fast"]
    save_checkpoint(run_dir / "checkpoints" / "last.pt", ckpt)
    (run_dir / "summary.json").write_text((interrupted_run / "summary.json").read_text())
    proc = run_cli([f"resume={run_dir}", "debug=fast"], tmp_path, run_dir=False)
    one_error_line(proc, "debug=fast", "preset")
    # The run that was given it may be resumed with it: nothing changes (checked without
    # training: with an override that is refused, the preset is not named).
    proc = run_cli([f"resume={interrupted_run}", "debug=fast", "optimizer.lr=0.5"], tmp_path,
                   run_dir=False)
    assert "debug=fast" not in one_error_line(proc, "optimizer.lr=0.5")


def test_a_refused_resume_export_leaves_no_dir(interrupted_run, tmp_path):
    proc = run_cli([f"resume={interrupted_run}", "mode=export"], tmp_path, run_dir=False)
    one_error_line(proc, "resume=", "applies only to mode=train")
    assert not (tmp_path / "outputs").exists()


# --- 3. one run, one directory ---------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_dirs(tmp_path):
    """Two runs in the same second, with Hydra's default run dir: both results stay."""
    args = ["mode=summary", "logger=none"]  # quick: the dir is what is tested
    cmd = [sys.executable, "-m", "convexp", *args]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda _: subprocess.run(
            cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
            timeout=600), range(2)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    dirs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(dirs) == 2, dirs


def test_a_run_into_a_finished_runs_dir_stops_before_touching_it(book_run, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in book_run.rglob("*") if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-m", "convexp", *QUICK, "optimizer.lr=-1",
         f"hydra.run.dir={book_run}"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    one_error_line(proc, str(book_run), "already holds another run's results")
    after = {p.name: p.stat().st_mtime_ns for p in book_run.rglob("*") if p.is_file()}
    assert after == before
    assert read_summary(book_run)["status"] == "completed"


def test_a_killed_run_leaves_a_running_summary(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convexp", *QUICK, "logger=none", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run_dir / "summary.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    summary = read_summary(run_dir)
    assert summary["status"] == "running" and summary["model"] == "standard"
    from convexp.compare import load_summaries

    assert [s["status"] for s in load_summaries(tmp_path)] == ["running"]


# --- 4. every bad input: one line, exit 2 ------------------------------------------------------

BAD_CLI = {
    "precision": (["trainer.precision=fp16"], ["trainer.precision", "fp16", "bf16"]),
    "kernel_type": (["model.kernel_size=abc"], ["model.kernel_size", "'abc'"]),
    "model_name": (["model=foo"], ["model/foo", "depthwise_dilated"]),
    "field": (["model=book_cnn", "model.channels=[64]"], ["model.channels", "BookCNNConfig"]),
    "big_seed": (["seed=9223372036854775807"], ["seed=9223372036854775807", "4294967295"]),
    "expr_seed": (["seed=2**70"], ["seed", "2**70"]),
    "objective": (["objective=bogus"], ["objective", "bogus", "best_val_acc"]),
    "test_size": (["data.test_size=20000"], ["data.test_size=20000", "10000"]),
    "shift": (["data.random_shift=20"], ["data.random_shift=20", "14"]),
    "std": (["data.normalize.std=inf"], ["data.normalize.std"]),
}


@pytest.fixture(scope="module")
def bad_cli(tmp_path_factory):
    def one(name):
        tmp = tmp_path_factory.mktemp(f"bad-{name}")
        return run_cli([*QUICK, *BAD_CLI[name][0]], tmp, timeout=900)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(BAD_CLI, pool.map(one, BAD_CLI), strict=True))


@pytest.mark.parametrize("name", list(BAD_CLI))
def test_bad_input_is_one_line_and_exit_2(bad_cli, name):
    one_error_line(bad_cli[name], *BAD_CLI[name][1])


def test_unreadable_data_root_is_one_line(tmp_path, capsys, monkeypatch):
    """Root may read any folder, so the permission error is simulated where it happens."""
    from convexp import data

    def denied(cfg, root):
        raise PermissionError(errno.EACCES, "Permission denied", str(root))

    monkeypatch.setattr(data.DATASETS, "get", lambda name: denied)
    with pytest.raises(DataError) as exc:  # the Python API raises; the CLI prints it
        train([*QUICK, f"data.root={tmp_path}"], tmp_path / "run")
    err = str(exc.value)
    assert "Permission denied" in err and str(tmp_path) in err, err


# --- 5. faults during training ---------------------------------------------------------------


def test_disk_full_at_a_checkpoint_keeps_progress_and_the_last_good_one(tmp_path, monkeypatch):
    real_replace, calls = os.replace, []

    def fill_disk_on_second_checkpoint(src, dst):
        if str(dst).endswith("last.pt"):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(convexp.atomic.os, "replace", fill_disk_on_second_checkpoint)
    summary = train([*QUICK, "trainer.max_epochs=2", "data.train_size=1024"], tmp_path / "run")
    assert summary["status"] == "failed"
    reason = summary["reason"]
    assert "no space left on device" in reason and "last.pt" in reason, reason
    assert summary["epochs_completed"] == 2 and summary["best_val_acc"] is not None
    assert load_checkpoint(tmp_path / "run")["progress"]["epoch"] == 1
    assert not list((tmp_path / "run").rglob("*.tmp")), "temporary files left behind"


def test_interrupted_without_checkpoints_does_not_offer_to_resume(tmp_path, monkeypatch):
    from convexp import runner, signals

    monkeypatch.setattr(signals, "_received", [])
    real_fit = runner.Runner.fit

    def fit_after_a_signal(self):
        signals._received.append(signal.SIGTERM)  # as the handler records one
        return real_fit(self)

    monkeypatch.setattr(runner.Runner, "fit", fit_after_a_signal)
    with pytest.raises(SystemExit) as exc:
        train([*QUICK, "trainer.checkpoint=false"], tmp_path / "run")
    assert exc.value.code == 128 + signal.SIGTERM
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted"
    assert "resume=" not in summary["reason"] and "cannot resume" in summary["reason"]
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- 7. the textbook's own data --------------------------------------------------------------


def _write_textbook_arrays(root: Path, dtype) -> Path:
    root.mkdir(parents=True)
    def bundled(key):
        return next(BUNDLED_MNIST.glob(IDX_FILES[key] + "*"))

    images = read_idx(bundled("train_images"), IMAGES_MAGIC)[:3000]
    labels = read_idx(bundled("train_labels"), LABELS_MAGIC)[:3000]
    x = images if dtype == np.uint8 else images.astype(np.float32) / 255  # as the chapter
    np.save(root / "x_train.npy", x)
    np.save(root / "y_train_label.npy", labels.astype(np.int64))
    return root


def test_textbook_float_arrays_train_exactly_as_their_uint8_originals(tmp_path):
    results = {}
    for dtype in (np.uint8, np.float32):
        root = _write_textbook_arrays(tmp_path / np.dtype(dtype).name, dtype)
        results[dtype] = train([*QUICK, "data=npy", f"data.root={root}", "data.val_size=500",
                                "data.test_size=null"], tmp_path / f"run-{np.dtype(dtype).name}")
    uint8, float32 = results[np.uint8], results[np.float32]
    assert uint8["status"] == float32["status"] == "completed"
    assert uint8["best_val_acc"] > 0.5
    assert float32["best_val_acc"] == uint8["best_val_acc"]
    assert float32["final_train_loss"] == uint8["final_train_loss"]


def test_float_arrays_that_are_not_pixels_are_refused(tmp_path, capsys):
    root = tmp_path / "npy"
    root.mkdir()
    np.save(root / "x_train.npy", np.random.default_rng(0).normal(size=(64, 28, 28))
            .astype(np.float32))
    np.save(root / "y_train_label.npy", np.zeros(64, dtype=np.int64))
    with pytest.raises(DataError) as exc:  # the Python API raises; the CLI prints it
        train([*QUICK, "data=npy", f"data.root={root}", "data.val_size=8", "data.test_size=null",
               "data.train_size=null"], tmp_path / "run")
    err = str(exc.value)
    assert "pixels / 255" in err and "np.rint" in err, err


def test_summary_json_is_valid_json_while_running(book_run):
    json.loads((book_run / "summary.json").read_text())
