"""Experiment loggers, registered by name with their schema: adding one is a class here (or in
any imported module) plus `conf/logger/<name>.yaml`. A logger failure is reported once and then
ignored: it never stops a run nor touches the run's local files (metrics.jsonl, summary.json,
checkpoints)."""

from __future__ import annotations

import functools
import logging
import netrc
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from convexp.option_schemas import NoLoggerConfig, WandbConfig
from convexp.registry import Registry
from convexp.schema import value

log = logging.getLogger(__name__)

LOGGERS: Registry = Registry("logger")


@LOGGERS.register("none", schema=NoLoggerConfig)
class NullLogger:
    """No experiment tracking: the run's local files are the record."""

    records_failed_jobs = False

    def __init__(self, cfg=None, config=None, run_dir=None, run_id=None, run_name=None,
                 group=None):
        pass

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, Any]) -> None: ...
    def log_model_table(self, report) -> None: ...
    def log_images(self, images: dict[str, Path]) -> None: ...
    def update_summary(self, values: dict[str, Any]) -> None: ...
    def log_model(self, path: Path, name: str, metadata: dict) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


def _guarded(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.run is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - W&B must never break a run
            log.warning("W&B %s failed (%s: %s); local results are unaffected, W&B logging "
                        "stops here.", method.__name__, type(e).__name__, e)
            self.failed_run, self.run = self.run, None  # still finished at the end
            return None

    return wrapper


def _default_wandb_hosts() -> set[str]:
    """W&B's default server: api.wandb.ai, or the installed wandb's default (newer releases
    default to another host, under which `wandb login` saves the key)."""
    hosts = {"api.wandb.ai"}
    try:
        import wandb

        hosts.add(urllib.parse.urlsplit(str(wandb.Settings().base_url)).netloc)
    except Exception:  # noqa: BLE001
        pass
    return hosts


def wandb_credentials_exist() -> bool:
    """An API key in WANDB_API_KEY, or in the .netrc (NETRC or ~/.netrc) for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL")
    hosts = {urllib.parse.urlsplit(base_url).netloc} if base_url else _default_wandb_hosts()
    try:
        entries = netrc.netrc(os.environ.get("NETRC") or None)
        return any(entries.authenticators(host) is not None for host in hosts if host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """`auto`: WANDB_MODE when set, else online with credentials and offline without."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_credentials_exist() else "offline"


# Online W&B is tried once per process. When it failed (host unreachable, init timed out,
# key refused...), this says why, and the later runs of the process (the other jobs of a
# Hydra sweep) go straight offline instead of waiting for the same failure again.
_online_unavailable: str | None = None

PROBE_TIMEOUT_S = 5.0  # the W&B host must answer some HTTP within this, or the run is offline
INIT_TIMEOUT_S = 30.0  # online wandb.init; WANDB_INIT_TIMEOUT overrides it


def wandb_base_url() -> str:
    """The W&B server this process talks to: WANDB_BASE_URL, `wandb login --host`, or the
    default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    import wandb

    return str(wandb.setup().settings.base_url)


def probe_wandb_host(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `url` answers HTTP (any status, 401 and 404 included) within `timeout` seconds,
    else why not. Much quicker than an online wandb.init, which retries for its whole timeout
    (30 s) before it fails on a refused connection, a dead proxy or a host that never answers.
    An inconclusive answer (a TLS certificate this probe cannot verify) counts as reachable:
    W&B may trust certificates that Python does not."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                outcome.append(None)
            else:
                outcome.append(f"{url} is unreachable ({e.reason})")
        except Exception as e:  # noqa: BLE001 - e.g. a read timeout, a reset, a bad URL
            outcome.append(f"{url} is unreachable ({type(e).__name__}: {e})")

    # In a thread: a DNS look-up ignores the socket timeout.
    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if not outcome:
        return f"{url} did not answer within {timeout:g} s"
    return outcome[0]


def _online_blocker() -> str | None:
    """Why online W&B is not tried for this run (None: try it)."""
    if _online_unavailable is not None:
        return _online_unavailable
    try:
        url = wandb_base_url()
    except Exception:  # noqa: BLE001 - let wandb.init report it
        return None
    return probe_wandb_host(url)


def _give_up_online(reason: str) -> None:
    """Remember for this process that W&B online failed, and say so once."""
    global _online_unavailable
    _online_unavailable = reason
    log.warning("W&B online unavailable: %s. This run and the later ones of this process log "
                "offline (wandb sync uploads them later).", reason)


def _release_wandb_service() -> None:
    """Shut down this process's wandb-core service after a failed online wandb.init: the
    service still holds the run's ID for the failed online run, and the offline retry with
    the same ID fails with "run ID ... is in use". The next wandb.init starts a fresh
    service (about a second)."""
    import wandb

    try:
        wandb.teardown()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - teardown may sys.exit on a bad exit
        log.debug("wandb.teardown after a failed online init: %s: %s", type(e).__name__, e)


def _init_timeout() -> float:
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S)
    except ValueError:
        return INIT_TIMEOUT_S


@LOGGERS.register("wandb", schema=WandbConfig)
class WandbLogger:
    """One W&B run per job. Metrics use `epoch` as their step metric.

    Online (credentials or mode=online) needs the W&B host: a quick probe checks it answers
    first, and when it does not, or when the online init fails anyway, the run is written
    offline (for `wandb sync`), as are the later runs of the process, without waiting again."""

    # A sweep compares jobs in W&B: a job that failed before training still shows there.
    records_failed_jobs = True

    def __init__(self, cfg, config: dict, run_dir: Path, run_id: str, run_name: str,
                 group: str | None):
        self.run = self.failed_run = None
        self.run_id = run_id
        mode = resolve_mode(value(cfg.mode))
        os.environ["WANDB_DATA_DIR"] = str(run_dir / "wandb")  # artifact staging, not ~
        init = dict(
            project=cfg.project, entity=cfg.entity, group=group, tags=list(cfg.tags),
            name=run_name, job_type=cfg.job_type, dir=str(run_dir), id=run_id, resume="allow",
            config=config, reinit="finish_previous",
        )
        offline_why = "no credentials or mode=offline"
        if mode == "online":
            earlier = _online_unavailable is not None
            blocker = _online_blocker()
            if blocker is not None:
                if not earlier:
                    _give_up_online(blocker)
                offline_why = ("W&B online was unavailable earlier in this process" if earlier
                               else "W&B online unavailable")
                mode = "offline"
        try:
            self.run = self._init(mode, init)
        except Exception as e:  # noqa: BLE001
            if mode != "online":
                log.warning("W&B init failed (%s: %s); training goes on without W&B.",
                            type(e).__name__, e)
                return
            _give_up_online(f"online init failed ({type(e).__name__}: {e})")
            _release_wandb_service()
            mode, offline_why = "offline", "W&B online unavailable"
            try:
                self.run = self._init(mode, init)
            except Exception as e2:  # noqa: BLE001
                log.warning("W&B offline init failed too (%s: %s); training goes on without "
                            "W&B.", type(e2).__name__, e2)
                return
        self._announce(mode, offline_why)
        self._keep_shadowed_config(config)

    def _announce(self, mode: str, offline_why: str) -> None:
        """Say where the run goes: its URL online, the `wandb sync` command offline."""
        try:
            # W&B decides the ID in a W&B sweep (WANDB_RUN_ID): report the one it uses.
            self.run_id = getattr(self.run, "id", None) or self.run_id
            if mode == "offline":
                sync_dir = getattr(self.run, "sync_dir", None) or Path(self.run.dir).parent
                log.info("W&B is offline (%s); upload later with: wandb sync %s", offline_why,
                         sync_dir)
            elif mode == "online":
                log.info("W&B run: %s", self.run.url)
        except Exception as e:  # noqa: BLE001 - only a log line
            log.debug("could not describe the W&B run: %s: %s", type(e).__name__, e)

    def _keep_shadowed_config(self, config: dict) -> None:
        """In a W&B sweep, W&B sets each sweep parameter as a config key and locks it: the
        parameter `model` (the Hydra config group, `model=standard`) replaces the resolved
        `model` section with the option's name. The section is kept as `model_config`."""
        try:
            logged = self.run.config
            shadowed = {f"{key}_config": section for key, section in config.items()
                        if isinstance(section, dict) and not isinstance(logged.get(key), dict)}
            if shadowed:
                logged.update(shadowed, allow_val_change=True)
        except Exception as e:  # noqa: BLE001 - only a copy
            log.debug("could not check the W&B config: %s: %s", type(e).__name__, e)

    @staticmethod
    def _init(mode: str, init: dict):
        import wandb

        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=_init_timeout(),
                                                            silent=True), **init)
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        return run

    @_guarded
    def log_metrics(self, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None})

    # Tables and images are logged with commit=False: they join the next epoch's history row
    # (or, logged after the last epoch, a row of their own when the run finishes) instead of
    # adding a row with no epoch, so W&B's history keeps one row per epoch, as metrics.jsonl.

    @_guarded
    def log_model_table(self, report) -> None:
        """The per-layer table printed at the start of the run, as a W&B table."""
        import wandb

        columns = ["name", "type", "kernel", "output", "params", "MACs"]
        rows = [[layer.name or "(model)", layer.type, layer.detail,
                 str(tuple(layer.output_shape)), layer.params, layer.macs]
                for layer in report.layers]
        self.run.log({"model/layers": wandb.Table(columns=columns, data=rows)}, commit=False)

    @_guarded
    def log_images(self, images: dict[str, Path]) -> None:
        """Image files (PNG, JPEG...), one W&B image each, under their key."""
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()},
                     commit=False)

    @_guarded
    def update_summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    @_guarded
    def log_model(self, path: Path, name: str, metadata: dict) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["final"])

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run, also after a failed call stopped the logging: an unfinished run
        would be returned again by the next wandb.init in this process."""
        run = self.run or self.failed_run
        self.run = self.failed_run = None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(e).__name__, e)


def build_logger(cfg, config: dict, run_dir: Path, run_id: str, run_name: str,
                 group: str | None):
    if value(cfg.get("mode")) == "disabled":
        return NullLogger()
    return LOGGERS.build(cfg.name, cfg, config, run_dir, run_id, run_name, group)
