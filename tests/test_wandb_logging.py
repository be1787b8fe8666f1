"""W&B logging: a default run (logger=wandb) without credentials goes offline and leaves a run
that `wandb leet inspect` reads back with the config, per-epoch history, summary and model
artifact; and no W&B failure ever costs the run its local results."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import FAST_RUN, read_metrics, read_summary, run_cli, wandb_inspect

from convexp.api import train
from convexp.loggers import CONFIG_KEYS
from convexp.wandb_env import resolve_mode

# A quick run of the default logger (debug=fast turns W&B off: logger=wandb turns it back on):
# 640 images in batches of 64, two epochs (10 steps each), on a narrow depthwise dilated net
# with a non-default kernel and lr, so the logged config can only have come from these
# overrides.
ARGS = ["model=depthwise_dilated", "model.kernel_size=5", "model.channels=[8,16]",
        "optimizer.lr=0.002", *FAST_RUN, "logger=wandb", "data.train_size=640",
        "data.batch_size=64", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb")
    run_cli(ARGS, tmp, timeout=1200, check_rc=0)
    run_dir = tmp / "run"
    # Read back once (each `wandb leet inspect` is a subprocess): the run, and its records.
    return run_dir, read_summary(run_dir), wandb_inspect(run_dir), wandb_inspect(
        run_dir, summary=False)


def test_default_logger_writes_a_finished_offline_run(wandb_run):
    run_dir, summary, run, _ = wandb_run
    assert summary["status"] == "completed"
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, offline
    assert run["state"] == "finished"
    assert run["exit_code"] == 0
    assert run["project"] == "convexp"
    assert run["run_id"] == summary["wandb_run_id"]
    assert run["name"] == "depthwise_dilated k5 d2 s0"


def test_wandb_config_is_the_resolved_hydra_config(wandb_run):
    _, summary, run, _ = wandb_run
    config = run["config"]
    assert config["model"]["name"] == "depthwise_dilated"
    assert config["model"]["kernel_size"] == 5
    assert config["model"]["channels"] == [8, 16]
    assert config["model"]["padding"] == "same"  # enums logged as plain strings
    assert config["optimizer"]["lr"] == pytest.approx(0.002)
    assert config["optimizer"]["name"] == "adamw"
    assert config["data"]["train_size"] == 640
    assert config["trainer"]["max_epochs"] == 2
    assert config["logger"]["name"] == "wandb"
    # Top-level columns for W&B's tables and sweeps: the job's inputs, as summary.json has them.
    assert config["variant"] == "depthwise_dilated"
    assert config["kernel_size"] == 5
    assert config["dilation"] == 2
    for key in ("seed", "params", "macs", "receptive_field", "param_ratio_vs_standard",
                "macs_ratio_vs_standard", "precision"):
        assert config[key] == summary[key], key


def test_wandb_summary_matches_summary_json(wandb_run):
    _, summary, run, _ = wandb_run
    logged = run["summary"]
    assert logged["status"] == "completed"
    for key in ("test_acc", "best_val_acc", "train_samples_per_s", "epochs_completed",
                "erf_95", "inference_ms_per_image"):
        assert logged[key] == summary[key], key
    assert summary["test_acc"] is not None and summary["params"] > 0


def test_each_wandb_key_is_in_the_config_or_the_summary_not_both(wandb_run):
    """Inputs in the config, results in the summary: W&B's Runs table shows each column
    once."""
    _, summary, run, _ = wandb_run
    assert set(CONFIG_KEYS) <= set(summary)  # every input is recorded...
    assert set(CONFIG_KEYS) <= set(run["config"])  # ...in the W&B config...
    assert not set(CONFIG_KEYS) & set(run["summary"])  # ...and only there
    assert not set(run["config"]) & set(run["summary"])


def test_wandb_history_has_one_record_per_epoch(wandb_run):
    run_dir, _, _, records = wandb_run
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    # One row of metrics per epoch, as metrics.jsonl. The images logged after the last epoch
    # (the effective receptive field) make a row of their own, with no metric in it.
    per_epoch = [h for h in history if "train_loss" in h]
    assert [h["epoch"] for h in per_epoch] == [1, 2]
    others = [h for h in history if "train_loss" not in h]
    assert [h["epoch"] for h in others] == [2]
    assert {key.split(".")[0] for key in others[0] if not key.startswith("_")} == {
        "epoch", "erf"}, others[0]
    history = per_epoch
    for logged, local in zip(history, read_metrics(run_dir), strict=True):
        for key in ("train_loss", "train_acc", "val_acc", "step"):
            assert logged[key] == local[key], key


def test_wandb_has_the_final_model_artifact(wandb_run):
    run_dir, summary, _, records = wandb_run
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    # The model, and the per-layer table (a W&B table is stored as a run_table artifact).
    assert sorted(a["type"] for a in artifacts) == ["model", "run_table"]
    (table,) = [a for a in artifacts if a["type"] == "run_table"]
    assert [c["path"] for c in table["manifest"]["contents"]] == ["model/layers.table.json"]
    (artifact,) = [a for a in artifacts if a["type"] == "model"]
    assert artifact["name"] == f"model-{summary['wandb_run_id']}"
    assert "final" in artifact["aliases"]
    (entry,) = artifact["manifest"]["contents"]
    assert entry["path"] == "last.pt"
    assert int(entry["size"]) == (run_dir / "checkpoints" / "last.pt").stat().st_size
    assert json.loads(artifact["metadata"])["test_acc"] == summary["test_acc"]


# --- mode resolution -------------------------------------------------------------------------


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_auto_mode_is_offline_without_credentials(no_credentials):
    assert resolve_mode("auto") == "offline"


def test_auto_mode_is_online_with_an_api_key(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_mode_is_online_with_a_netrc_login(no_credentials):
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_explicit_modes_are_kept(no_credentials, mode):
    assert resolve_mode(mode) == mode


@pytest.mark.parametrize("env_mode", ["offline", "disabled"])
def test_auto_mode_honours_wandb_mode_env_with_credentials(no_credentials, monkeypatch,
                                                           env_mode):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", env_mode)
    assert resolve_mode("auto") == env_mode


# --- W&B failures never lose local results -----------------------------------------------------

QUICK = ["model=book_cnn", *FAST_RUN, "logger=wandb", "logger.mode=offline",
         "data.train_size=640", "data.batch_size=64"]


@pytest.fixture
def isolated_wandb(tmp_path, monkeypatch):
    """W&B's environment for an in-process run, restored afterwards."""
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                       "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _assert_local_results(run_dir, summary):
    assert summary["status"] == "completed"
    assert 0 <= summary["test_acc"] <= 1
    assert read_summary(run_dir) == summary
    assert len(read_metrics(run_dir)) == 1
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_wandb_init_failure_keeps_local_results(isolated_wandb, monkeypatch, tmp_path, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb.init exploded")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="convexp.loggers"):
        summary = train(QUICK, tmp_path / "run")
    _assert_local_results(tmp_path / "run", summary)
    assert "wandb.init exploded" in caplog.text
    assert not list((tmp_path / "run").glob("wandb/offline-run-*"))


class _BrokenRun:
    """A W&B run whose every call after init fails, as when the W&B service dies mid-run."""

    dir = "."

    def __init__(self):
        self.calls = []

    def define_metric(self, *args, **kwargs):
        pass

    def _fail(self, name):
        self.calls.append(name)
        raise ConnectionError(f"wandb {name} lost its connection")

    def log(self, *args, **kwargs):
        self._fail("log")

    def log_artifact(self, *args, **kwargs):
        self._fail("log_artifact")

    def finish(self, *args, **kwargs):
        self._fail("finish")

    @property
    def summary(self):
        self._fail("summary")


def test_wandb_failure_during_training_keeps_local_results(isolated_wandb, monkeypatch,
                                                           tmp_path, caplog):
    import wandb

    broken = _BrokenRun()
    monkeypatch.setattr(wandb, "init", lambda *args, **kwargs: broken)
    with caplog.at_level(logging.WARNING, logger="convexp.loggers"):
        summary = train(QUICK, tmp_path / "run")
    _assert_local_results(tmp_path / "run", summary)
    # The first failure (the first call after init: logging the per-layer table) is reported
    # once and W&B logging stops there; the run is still finished once at the end, so a later
    # wandb.init in this process does not reuse it.
    assert broken.calls == ["log", "finish"]
    assert caplog.text.count("local results are unaffected") == 1
