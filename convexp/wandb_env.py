"""W&B's environment, one owner for every W&B run convexp starts (a job's, the sweep report's).

* credentials: an API key in WANDB_API_KEY, or a `wandb login` in the .netrc;
* the mode: `auto` is WANDB_MODE when set, else online with credentials and offline without;
  online, offline and disabled are kept;
* the host probe: online needs the W&B host to answer HTTP within PROBE_TIMEOUT_S, much quicker
  than an online wandb.init gives up (INIT_TIMEOUT_S, or WANDB_INIT_TIMEOUT);
* one decision per process: once online failed (no answer, or an online init that failed),
  every later run of the process (the other jobs of a Hydra sweep, the end-of-sweep report)
  goes offline at once, without waiting again. A process that starts after its jobs ran
  elsewhere (a joblib or submitit sweep's report) takes their decision with
  `adopt_online_unavailable`, from what the jobs recorded (`wandb_online_unavailable`);
* the offline fallback: an online init that fails is retried offline, after a teardown of the
  W&B service (it still holds the run ID of the failed online run);
* one line says where runs go, once per place to sync from: a run's URL online, the
  `wandb sync` command offline.

`start_run(mode, **init_kwargs)` starts a run honouring all of that. wandb itself is imported
only when a run starts.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # the W&B host must answer some HTTP within this, or the run is offline
INIT_TIMEOUT_S = 30.0  # online wandb.init; WANDB_INIT_TIMEOUT overrides it

# Why online W&B is unavailable to this process (None: not known to be). Set by the first
# failure, or adopted from the jobs of a sweep; the later runs go straight offline.
_online_unavailable: str | None = None

# The places an offline run was announced for (`wandb sync` arguments): said once each.
_announced: set[str] = set()


# --- credentials and mode --------------------------------------------------------------------


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
    mode = str(getattr(mode, "value", mode))
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_credentials_exist() else "offline"


# --- the host probe and the once-per-process decision ---------------------------------------


def wandb_base_url() -> str:
    """The W&B server this process talks to: WANDB_BASE_URL, `wandb login --host`, or the
    default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    import wandb

    return str(wandb.setup().settings.base_url)


def probe_wandb_host(url: str, timeout: float | None = None) -> str | None:
    """None when `url` answers HTTP (any status, 401 and 404 included) within `timeout` seconds
    (default PROBE_TIMEOUT_S), else why not. Much quicker than an online wandb.init, which
    retries for its whole timeout (30 s) before it fails on a refused connection, a dead proxy
    or a host that never answers. An inconclusive answer (a TLS certificate this probe cannot
    verify) counts as reachable: W&B may trust certificates that Python does not."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
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


def online_unavailable() -> str | None:
    """Why online W&B is unavailable to this process, or None when it is not known to be."""
    return _online_unavailable


def _give_up_online(reason: str) -> None:
    """Remember for this process that W&B online failed, and say so once."""
    global _online_unavailable
    _online_unavailable = reason
    log.warning("W&B online unavailable: %s. This run and the later ones of this process log "
                "offline (wandb sync uploads them later).", reason)


def adopt_online_unavailable(reason: str | None) -> None:
    """Take a decision made in another process (a sweep's job recorded it in its summary.json
    as `wandb_online_unavailable`): later runs of this process go offline at once, without a
    probe. None changes nothing; a decision this process made itself is kept."""
    global _online_unavailable
    if reason and _online_unavailable is None:
        _online_unavailable = reason
        log.info("W&B online was unavailable to this sweep's jobs (%s): offline here too.",
                 reason)


def _online_blocker() -> str | None:
    """Why online W&B is not tried for this run (None: try it)."""
    if _online_unavailable is not None:
        return _online_unavailable
    try:
        url = wandb_base_url()
    except Exception:  # noqa: BLE001 - let wandb.init report it
        return None
    return probe_wandb_host(url)


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


# --- starting a run --------------------------------------------------------------------------


def _init(mode: str, init_kwargs: dict):
    import wandb

    settings = wandb.Settings(init_timeout=_init_timeout(), silent=True)
    return wandb.init(mode=mode, settings=settings, **init_kwargs)


def start_run(mode: str = "auto", *, sync_hint: str | None = None, **init_kwargs: Any):
    """Start a W&B run (`init_kwargs` as for wandb.init: project, entity, group, name,
    job_type, dir, id, config, tags...) in `mode` (auto | online | offline | disabled), through
    the once-per-process decision: online only when W&B online has not failed in this process
    and its host answers the probe; an online init that fails anyway is retried offline.

    Returns (run, mode_used, offline_why); offline_why says why the run is offline (None
    online). Raises what the last wandb.init raised when no run could be started.

    One line says where the run goes: its URL online; offline, the `wandb sync` command for
    `sync_hint` (default: the run's own dir), once per process for each hint, so the jobs of a
    sweep that pass the sweep's glob (`SWEEP_DIR/*/wandb/offline-run-*`) say it once."""
    init_kwargs.setdefault("reinit", "finish_previous")
    mode = resolve_mode(mode)
    offline_why = "no W&B credentials, or mode=offline" if mode == "offline" else None
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
        run = _init(mode, init_kwargs)
    except Exception as e:
        if mode != "online":
            raise
        _give_up_online(f"online init failed ({type(e).__name__}: {e})")
        _release_wandb_service()
        mode, offline_why = "offline", "W&B online unavailable"
        run = _init(mode, init_kwargs)
    announce(run, mode, offline_why, sync_hint)
    return run, mode, offline_why


def announce(run, mode: str, offline_why: str | None, sync_hint: str | None = None) -> None:
    """Say where `run` goes: its URL online; offline, why and the `wandb sync` command, once
    per process for each place to sync from."""
    try:
        if mode == "offline":
            hint = sync_hint or str(getattr(run, "sync_dir", None) or Path(run.dir).parent)
            if hint in _announced:
                log.debug("W&B is offline (%s): %s", offline_why, hint)
                return
            _announced.add(hint)
            log.info("W&B is offline (%s); upload later with: wandb sync %s", offline_why, hint)
        elif mode == "online":
            log.info("W&B run: %s", run.url)
    except Exception as e:  # noqa: BLE001 - only a log line
        log.debug("could not describe the W&B run: %s: %s", type(e).__name__, e)

