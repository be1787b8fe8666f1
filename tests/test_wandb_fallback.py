"""W&B with credentials but no usable server: the run falls back to an offline W&B run that
`wandb sync` can upload later (read back here with `wandb leet inspect`), the process waits for
the failure once, not once per job, and local results never depend on W&B. Also: an online run
prints its URL, and tables and images reach the W&B run.

The servers are local: a closed port (connection refused), a socket that accepts and never
answers (a dead proxy, a firewall that drops packets), and an HTTP server that answers every
request with an error (a server that refuses the key)."""

from __future__ import annotations

import glob
import http.server
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import cli_env, read_summary, wandb_inspect
from omegaconf import OmegaConf

from convexp import wandb_env
from convexp.loggers import WandbLogger
from convexp.naming import sync_glob
from convexp.wandb_env import probe_wandb_host, start_run

FAKE_KEY = "0123456789" * 4  # the form of a W&B API key; no server ever accepts it


def wandb_cfg(mode: str = "online"):
    return OmegaConf.create({
        "name": "wandb", "project": "convexp", "entity": None, "group": None, "tags": [],
        "run_name": None, "job_type": "train", "mode": mode, "log_model": False})


@pytest.fixture
def fresh_wandb(tmp_path, monkeypatch):
    """W&B's environment for in-process runs, restored afterwards, with W&B's process-wide
    state reset before and after: its settings singleton (which caches the environment) and
    convexp's record of an earlier online failure."""
    import wandb

    wandb.teardown()
    for var, value in {"WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
                       "WANDB_DIR": str(tmp_path), "WANDB_DATA_DIR": str(tmp_path / "data"),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                       "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                       "WANDB_INIT_TIMEOUT": "20",
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                       }.items():
        monkeypatch.setenv(var, value)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID",
                "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(wandb_env, "_online_unavailable", None)
    monkeypatch.setattr(wandb_env, "_announced", set())
    yield
    wandb.teardown()


@pytest.fixture
def with_key(fresh_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts TCP connections (the kernel does, from the backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def refusing_server():
    """Answers every request with 401, as a W&B server does for a key it does not know; counts
    the requests."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            requests.append(f"{self.command} {self.path}")
            body = b'{"errors":[{"message":"invalid api key"}]}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}",
                          requests=requests)
    server.shutdown()
    server.server_close()


def start_logger(run_dir: Path, run_id: str, mode: str = "online", config=None,
                 sync_hint=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(wandb_cfg(mode), config or {"variant": "standard", "kernel_size": 5},
                       run_dir, run_id, f"job {run_id}", "fallback-test", sync_hint=sync_hint)


def assert_synced_later(run_dir: Path, run_id: str, config: dict, summary: dict,
                        exit_code: int = 0) -> None:
    """What `wandb sync` would upload: one finished offline run with this ID, config and
    summary, read back by wandb's own reader."""
    offline = list(run_dir.glob("wandb/offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in offline] == [run_id], offline
    assert (offline[0] / f"run-{run_id}.wandb").is_file()
    run = wandb_inspect(run_dir)
    assert run["run_id"] == run_id
    assert run["state"] == ("finished" if exit_code == 0 else "failed")  # finished either way
    assert run["exit_code"] == exit_code
    assert run["project"] == "convexp"
    for key, value in config.items():
        assert run["config"][key] == value, key
    for key, value in summary.items():
        assert run["summary"][key] == value, key


def convexp_warnings(caplog) -> list[str]:
    """convexp's own warnings and errors: wandb logs records of its own (an ERROR when its
    init fails), whose number is its business, not ours."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.split(".")[0] == "convexp"]


def spy_on_wandb_init(monkeypatch) -> list[str]:
    """Records the mode of every wandb.init call (and still makes it)."""
    import wandb

    modes, real_init = [], wandb.init

    def init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    return modes


# --- the probe -------------------------------------------------------------------------------


def test_probe_reports_a_refused_connection_at_once():
    url = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    why = probe_wandb_host(url, timeout=3000)
    assert time.monotonic() - start < 300  # did not wait its timeout, however busy the machine
    assert why is not None and url in why and "refused" in why.lower()


def test_probe_gives_up_on_a_host_that_never_answers(silent_server):
    start = time.monotonic()
    why = probe_wandb_host(silent_server, timeout=1)
    assert 0.9 < time.monotonic() - start < 300  # waited its timeout, then gave up
    assert why is not None and silent_server in why


def test_probe_counts_any_http_answer_as_reachable(refusing_server):
    assert probe_wandb_host(refusing_server.url, timeout=5) is None
    assert refusing_server.requests == ["HEAD /"]


# --- the fallback ----------------------------------------------------------------------------


def test_unreachable_host_gives_an_offline_run_at_once_and_once_per_process(
        with_key, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    assert wandb_env.resolve_mode("auto") == "online"  # credentials: W&B would go online
    inits = spy_on_wandb_init(monkeypatch)
    with caplog.at_level(logging.INFO, logger="convexp"):
        first = start_logger(tmp_path / "job0", "fallbk00", mode="auto")
        first.update_summary({"test_acc": 0.5})
        first.finish()

        # The next job of the process does not probe again: it goes straight offline.
        monkeypatch.setattr(wandb_env, "probe_wandb_host", no_probe)
        second = start_logger(tmp_path / "job1", "fallbk01", mode="auto")
        second.update_summary({"test_acc": 0.25})
        second.finish(exit_code=1)
    assert inits == ["offline", "offline"]  # no online wandb.init, so no wait for its timeout
    warnings = convexp_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0] and "later ones of this process" in warnings[0]
    assert caplog.text.count("W&B is offline (W&B online unavailable)") == 1
    assert caplog.text.count("W&B online was unavailable earlier in this process") == 1
    assert caplog.text.count("upload later with: wandb sync ") == 2
    assert_synced_later(tmp_path / "job0", "fallbk00", {"variant": "standard"},
                        {"test_acc": 0.5})
    assert_synced_later(tmp_path / "job1", "fallbk01", {"kernel_size": 5}, {"test_acc": 0.25},
                        exit_code=1)
    assert not list(tmp_path.glob("job*/wandb/run-*"))  # no online run was even started


def test_silent_host_costs_the_probe_timeout_not_the_init_timeout(with_key, tmp_path,
                                                                    monkeypatch, caplog,
                                                                    silent_server):
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setattr(wandb_env, "PROBE_TIMEOUT_S", 1.0)
    inits = spy_on_wandb_init(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="convexp"):
        job = start_logger(tmp_path / "job", "silent00")
        job.finish()
    assert inits == ["offline"]  # the probe decided: no online wandb.init and its long timeout
    assert "did not answer" in caplog.text or "timed out" in caplog.text
    assert_synced_later(tmp_path / "job", "silent00", {"variant": "standard"}, {})


def test_failed_online_init_falls_back_to_an_offline_run(with_key, tmp_path, monkeypatch,
                                                         caplog, refusing_server):
    """The reported bug: the host answers, so the online wandb.init really runs and fails; the
    offline retry used to fail too with "run ID ... is in use" (W&B's service still held the
    ID for the failed online run) and the job had no W&B record at all."""
    monkeypatch.setenv("WANDB_BASE_URL", refusing_server.url)
    with caplog.at_level(logging.INFO, logger="convexp"):
        first = start_logger(tmp_path / "job0", "refuse00")
        first.log_metrics({"epoch": 1, "val_acc": 0.5})
        first.update_summary({"best_val_acc": 0.5})
        first.finish()
        online_requests = len(refusing_server.requests)
        second = start_logger(tmp_path / "job1", "refuse01")
        second.finish()
    assert "POST /graphql" in refusing_server.requests[:online_requests]  # wandb.init tried
    # ...once per process: no W&B API call after the first job's.
    assert "POST /graphql" not in refusing_server.requests[online_requests:]
    assert "online init failed" in caplog.text
    assert "offline init failed too" not in caplog.text
    assert "is in use" not in caplog.text
    assert len(convexp_warnings(caplog)) == 1  # W&B's own ERROR record is W&B's business
    assert_synced_later(tmp_path / "job0", "refuse00", {"variant": "standard"},
                        {"best_val_acc": 0.5, "val_acc": 0.5, "epoch": 1})
    assert_synced_later(tmp_path / "job1", "refuse01", {"kernel_size": 5}, {})


# --- one decision per sweep, its report included (issue 18.6, 19.7) --------------------------


def no_probe(*args, **kwargs):
    raise AssertionError("probed again")


def test_report_run_obeys_the_decision_its_jobs_made(with_key, tmp_path, monkeypatch, caplog):
    """A sweep's jobs found the host unreachable: the end-of-sweep report, started in the same
    process with `start_run` as the report code starts it, goes offline at once (no probe, no
    online init) and leaves an offline-run-* that the sweep's one `wandb sync` line covers."""
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    inits = spy_on_wandb_init(monkeypatch)
    sweep = tmp_path / "sweep"
    hint = sync_glob(sweep)
    with caplog.at_level(logging.INFO, logger="convexp"):
        for n in range(2):
            job = start_logger(sweep / str(n), f"sweepj0{n}", mode="auto", sync_hint=hint)
            job.finish()
        monkeypatch.setattr(wandb_env, "probe_wandb_host", no_probe)
        report_dir = sweep / "report"
        report_dir.mkdir()
        run, mode, why = start_run("auto", sync_hint=hint, project="convexp",
                                   group="fallback-test", job_type="report", name="report",
                                   dir=str(report_dir), config={"n_configurations": 2})
        run.summary.update({"best_label": "standard k3 d1"})
        run.finish()
    assert inits == ["offline"] * 3
    assert mode == "offline" and "earlier in this process" in why
    assert len(convexp_warnings(caplog)) == 1, convexp_warnings(caplog)
    # "W&B is offline" once for the whole sweep, with the command that uploads every run.
    assert caplog.text.count("W&B is offline") == 1
    assert caplog.text.count(f"upload later with: wandb sync {hint}") == 1
    synced = sorted(Path(p).parent.parent.name for p in glob.glob(hint))
    assert synced == ["0", "1", "report"]
    assert not list(sweep.glob("*/wandb/run-*"))  # no online run was even started
    logged = wandb_inspect(report_dir)
    assert logged["summary"]["best_label"] == "standard k3 d1"
    assert logged["config"]["n_configurations"] == 2


def test_a_later_process_adopts_the_decision_its_jobs_recorded(with_key, tmp_path,
                                                               monkeypatch):
    """A joblib or submitit sweep's report runs in another process than its jobs: the reason
    a job recorded in summary.json (`wandb_online_unavailable`) sends it offline at once."""
    monkeypatch.setattr(wandb_env, "probe_wandb_host", no_probe)
    inits = spy_on_wandb_init(monkeypatch)
    wandb_env.adopt_online_unavailable(None)  # a job that found W&B online: nothing changes
    assert wandb_env.online_unavailable() is None
    wandb_env.adopt_online_unavailable("http://127.0.0.1:9 is unreachable (refused)")
    run, mode, why = start_run("online", project="convexp", job_type="report",
                               dir=str(tmp_path))
    run.finish()
    assert (inits, mode) == (["offline"], "offline")
    assert "unavailable" in why
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 1


def test_offline_line_is_said_once_per_place_to_sync_from(fresh_wandb, tmp_path, caplog):
    """Runs of one sweep share the line; runs of their own (the API, called twice) each say
    where they are."""
    with caplog.at_level(logging.INFO, logger="convexp"):
        for n in range(2):
            start_logger(tmp_path / "sweep" / str(n), f"shared0{n}", mode="offline",
                         sync_hint=sync_glob(tmp_path / "sweep")).finish()
        for n in range(2):
            start_logger(tmp_path / f"run{n}", f"single0{n}", mode="offline").finish()
    lines = [r.getMessage() for r in caplog.records if "W&B is offline" in r.getMessage()]
    assert len(lines) == 3, lines
    assert lines[0].endswith(sync_glob(tmp_path / "sweep"))
    assert [str(tmp_path / f"run{n}") in lines[1 + n] for n in range(2)] == [True, True]


@pytest.mark.slow
def test_no_server_run_end_to_end(tmp_path):
    """`python -m convexp ... logger.mode=online` with a key and no reachable server: the job
    completes with its local results and an offline W&B run that holds its summary."""
    env = cli_env(tmp_path)
    env.pop("WANDB_MODE")
    env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "convexp", "debug=fast", "logger=wandb", "logger.mode=online",
           "data.train_size=256", "data.val_size=128", "data.test_size=128",
           "model.channels=[8,16]", "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=9000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log_text = (run_dir / "convexp.log").read_text()
    assert log_text.count("W&B online unavailable") == 2  # the warning, and the offline line
    assert "in use" not in log_text and "offline init failed" not in log_text
    summary = read_summary(run_dir)
    assert summary["status"] == "completed"
    assert_synced_later(run_dir, summary["wandb_run_id"], {"variant": "standard"},
                        {"status": "completed", "test_acc": summary["test_acc"],
                         "best_val_acc": summary["best_val_acc"]})
    assert not list(run_dir.glob("wandb/run-*"))  # the probe decided: no online run started


# --- an online run's URL ---------------------------------------------------------------------


class _OnlineRun:
    """What wandb.init returns online, as far as the logger looks at it (no W&B server here
    to start a real one)."""

    id = "onl1ne00"
    offline = False
    url = "https://wandb.example/ent/convexp/runs/onl1ne00"
    config: dict = {}

    def define_metric(self, *args, **kwargs):
        pass

    def finish(self, exit_code=0):
        pass


def test_online_run_logs_its_url_once(fresh_wandb, tmp_path, monkeypatch, caplog):
    import wandb

    inits = []
    monkeypatch.setattr(wandb_env, "probe_wandb_host", lambda url, timeout=None: None)
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw["mode"]) or _OnlineRun())
    with caplog.at_level(logging.INFO, logger="convexp"):
        job = start_logger(tmp_path / "job", "onl1ne00", mode="online")
        job.finish()
    assert inits == ["online"]
    assert caplog.text.count("W&B run: https://wandb.example/ent/convexp/runs/onl1ne00") == 1
    assert "offline" not in caplog.text


# --- tables and images -----------------------------------------------------------------------


def test_model_table_and_images_reach_the_offline_run(fresh_wandb, tmp_path):
    from PIL import Image

    from convexp.introspect import describe_model

    model = OmegaConf.create({"name": "standard", "kernel_size": 5, "dilation": 2,
                              "channels": [4, 8], "padding": "same", "norm": "batch",
                              "activation": "relu", "pool": "max", "head": "flatten",
                              "dropout": 0.0})
    report, _ = describe_model(model)
    image = tmp_path / "erf.png"
    Image.new("RGB", (28, 20), (250, 120, 0)).save(image)

    job = start_logger(tmp_path / "job", "media000", mode="offline")
    job.log_model_table(report)
    job.log_metrics({"epoch": 1, "val_acc": 0.5})
    job.log_images({"analysis/erf": image})
    job.log_metrics({"epoch": 2, "val_acc": 0.75})
    job.finish()

    records = wandb_inspect(tmp_path / "job", summary=False)
    files = [f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]]
    (table_file,) = [f for f in files if f.startswith("media/table/model/layers")]
    (image_file,) = [f for f in files if f.startswith("media/images/analysis/erf")]
    # One history row per epoch, as metrics.jsonl: the media join the rows of the next epoch.
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0]["model/layers._type"] == "table-file"
    assert history[0]["model/layers.path"] == table_file
    assert history[0]["model/layers.nrows"] == len(report.layers)
    assert history[1]["analysis/erf._type"] == "image-file"
    assert history[1]["analysis/erf.path"] == image_file
    assert (history[1]["analysis/erf.width"], history[1]["analysis/erf.height"]) == (28, 20)

    # The files wandb sync uploads, with the table's rows.
    files_dir = next((tmp_path / "job").glob("wandb/offline-run-*")) / "files"
    table = json.loads((files_dir / table_file).read_text())
    assert table["columns"] == ["name", "type", "kernel", "output", "params", "MACs"]
    assert [row[0] for row in table["data"]] == [layer.name or "(model)"
                                                 for layer in report.layers]
    assert sum(row[4] for row in table["data"]) == report.params
    assert sum(row[5] for row in table["data"]) == report.macs
    assert Image.open(files_dir / image_file).size == (28, 20)


def test_a_missing_image_stops_wandb_logging_not_the_run(fresh_wandb, tmp_path, caplog):
    job = start_logger(tmp_path / "job", "noimg000", mode="offline")
    with caplog.at_level(logging.WARNING, logger="convexp"):
        job.log_images({"analysis/erf": tmp_path / "missing.png"})
        job.log_metrics({"epoch": 1, "val_acc": 0.5})  # ignored: W&B logging stopped
    job.finish()  # still finished
    assert caplog.text.count("local results are unaffected") == 1
    run = wandb_inspect(tmp_path / "job")
    assert run["state"] == "finished"
    assert "val_acc" not in run["summary"]
