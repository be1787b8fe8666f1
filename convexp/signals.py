"""SIGINT/SIGTERM ask the running job to stop at the next step boundary, checkpoint and record
`interrupted`. Installed as the process starts, so that a signal during setup is kept too."""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("convexp")

_received: list[int] = []
SECOND_CTRL_C = "stopped at once by a second Ctrl-C, without a checkpoint of the current step"


def _on_signal(signum, frame):
    if _received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _received.append(signum)
    log.warning("signal %d received: stopping at the next step and saving a checkpoint", signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: the launcher owns signals
            pass


def stop_requested() -> bool:
    return bool(_received)


def first_signal(default: int = signal.SIGINT) -> int:
    return _received[0] if _received else default
