"""`python -m convexp [overrides]`: one training job, or a sweep with -m."""

from __future__ import annotations

import ctypes

import hydra

from convexp.paths import CONFIG_DIR
from convexp.schema import register_configs
from convexp.task import install_signal_handlers, run

register_configs()


def _keep_freed_memory() -> None:
    """glibc hands large freed blocks back to the OS and the next batch faults them in again:
    on the 2-core VMs we measured, that tripled the cost of every large activation tensor."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


# Launchers pickle the task function: decorate a thin module-level wrapper, not a closure.
main = hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(run)

if __name__ == "__main__":
    _keep_freed_memory()
    install_signal_handlers()
    main()
