"""Process set-up: memory tuning, the CPU thread budget, device selection and synchronisation.
Everything here acts on the process or the machine, not on one model."""

from __future__ import annotations

import ctypes
import os

import torch

from convexp.errors import DeviceError


def keep_freed_memory() -> bool:
    """glibc hands large freed blocks back to the OS and the next batch faults them in again:
    on the 2-core VMs we measured, that tripled the cost of every large activation tensor.
    Returns whether the tuning applied (False where libc is not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    return True


def available_cpus() -> int:
    """The cores this process may run on (a Slurm allocation or taskset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_budget(threads: int | None, launcher: dict | None) -> int | None:
    """Torch CPU threads for one job: `trainer.threads` when set; else, for a launcher that
    runs jobs side by side, the cores divided among them, so jobs never oversubscribe the
    cores; else None (torch's default, all cores)."""
    if threads is not None:
        return threads
    if not launcher:
        return None
    target = str(launcher.get("_target_", ""))
    cpus = available_cpus()
    if "JoblibLauncher" in target:
        jobs = launcher.get("n_jobs")
        if isinstance(jobs, int) and jobs != 1:
            jobs = jobs if jobs > 0 else max(1, cpus + 1 + jobs)  # joblib: -1 = all cores
            return max(1, cpus // jobs)
        return None
    if "LocalLauncher" in target:  # submitit_local starts every job of the sweep at once
        return launcher.get("cpus_per_task") or 1
    if "SlurmLauncher" in target:  # each job has its own allocation
        return launcher.get("cpus_per_task") or None
    return None


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("trainer.device=cuda, but CUDA is not available on this machine "
                          "(use trainer.device=auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("trainer.device=mps, but MPS is not available on this machine "
                          "(use trainer.device=auto or cpu)")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: timings must cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
