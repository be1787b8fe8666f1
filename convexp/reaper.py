"""How a job's process ended, said where a sweep can read it.

`exit_reason` words a worker process's end (`... killed by signal 9 (SIGKILL)`) for the job's
summary record; both of convexp's launchers use it (convexp/launchers.py).

`python -m convexp.reaper ARGS...` runs `python ARGS...` as its child, passes on the signals it
is sent, and when the child ends with a nonzero status writes one line to its stderr (the job's
log) saying how, then exits with that status (128 + N for signal N). Under
hydra/launcher=submitit_local every job's process runs so: submitit's local controller reaps the
job's process itself and keeps its exit status to itself, so the sweep could otherwise say only
that no result came back. The controller sends the job SIGUSR2 before a timeout, SIGINT and then
SIGKILL to end it, and passes on its own SIGTERM: each reaches the child once; a SIGKILL of this
process kills the child too (Linux). Imports neither torch nor Hydra: it starts with every job.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

# The signals passed on to the child. A signal from the terminal (Ctrl-C, Ctrl-\, a hangup)
# reaches the child's process group, the child included, so it is not passed on again.
FORWARDED = tuple(getattr(signal, name) for name in
                  ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent, as the terminal's are (Linux)
_PR_SET_PDEATHSIG = 1
# Not anchored to a line's start: a progress bar (\r, no \n) may end the job's last line.
_LINE = re.compile(r"convexp\.reaper: the job's process ended with status (-?\d+)")
_TAIL_BYTES = 1 << 16


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def exit_reason(exitcode: int | None) -> str:
    """Why a worker process ended without a result, e.g. `... killed by signal 9 (SIGKILL)`."""
    if exitcode is not None and exitcode < 0:
        return (f"its worker process was killed by signal {-exitcode} "
                f"({_signal_name(-exitcode)})")
    return f"its worker process exited with code {exitcode} before returning its result"


def status_line(status: int) -> str:
    """The line the reaper writes for a child that ended with `status` (Popen's returncode)."""
    how = f" (killed by signal {-status}, {_signal_name(-status)})" if status < 0 else ""
    return f"convexp.reaper: the job's process ended with status {status}{how}"


def available() -> bool:
    """Whether this platform can run the reaper (it waits with sigwaitinfo: not on macOS)."""
    return hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")


def command(python: str) -> str:
    """The command that runs `python ARGS...` under the reaper, given `python`."""
    return f"{python} -m convexp.reaper"


def status_in(log: str | Path) -> int | None:
    """The exit status the reaper wrote last in `log` (None: none, or no such file)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _LINE.findall(tail)
    return int(found[-1]) if found else None


def _child_setup(mask: set):
    """What the child runs before its program: on Linux, SIGKILL for it when this process
    dies (the child never outlives its reaper, as a job's process killed outright would not
    outlive itself); then the signal mask this process started with."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None
    parent = os.getpid()

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
            if os.getppid() != parent:  # the reaper died before prctl took effect
                os._exit(128 + int(signal.SIGKILL))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    return setup


def main(argv: list[str]) -> int:
    """Run `python ARGS...`; pass on the signals sent here (blocked, taken by sigwaitinfo, so
    none is lost between two checks of the child) until it ends; return its status."""
    watched = {*FORWARDED, signal.SIGCHLD}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    child = subprocess.Popen([sys.executable, *argv], preexec_fn=_child_setup(mask))
    while (status := child.poll()) is None:
        info = signal.sigwaitinfo(watched)
        if info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
            child.send_signal(info.si_signo)
    if status != 0:
        try:  # on a line of its own, whatever the child wrote last
            print(f"\n{status_line(status)}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # no stderr to write to: the status still goes on
            pass
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
