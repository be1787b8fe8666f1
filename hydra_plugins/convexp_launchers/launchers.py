"""`hydra/launcher=joblib`, `hydra/launcher=submitit_local` and `hydra/launcher=slurm`: the
plugins' launchers, with a sweep that survives a killed worker (the logic:
convexp/launchers.py). Without the sweep extra neither plugin is installed, and nothing is
defined here."""

from __future__ import annotations

from collections.abc import Sequence

try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import (
        JoblibLauncher as _HydraJoblibLauncher,
    )
except ImportError:  # the sweep extra is not installed
    _HydraJoblibLauncher = None
try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        LocalLauncher as _HydraLocalLauncher,
    )
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _HydraSlurmLauncher,
    )
except ImportError:
    _HydraLocalLauncher = _HydraSlurmLauncher = None

if _HydraJoblibLauncher is not None:
    class JoblibLauncher(_HydraJoblibLauncher):
        """n_jobs jobs at a time, each in a process of its own."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            from convexp.launchers import launch_in_processes

            return launch_in_processes(self, job_overrides, initial_job_idx)

if _HydraLocalLauncher is not None:
    class LocalLauncher(_HydraLocalLauncher):
        """submitit's local launcher; a job whose process dies is recorded, not raised."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            from convexp.launchers import launch_surviving_lost_jobs

            return launch_surviving_lost_jobs(self, super().launch, job_overrides,
                                              initial_job_idx)

if _HydraSlurmLauncher is not None:
    class SlurmLauncher(_HydraSlurmLauncher):
        """submitit's Slurm launcher; a job that ends without a result (OOM-killed, node
        failure, cancelled) is recorded as failed with Slurm's state, not raised."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            from convexp.launchers import launch_surviving_lost_jobs

            return launch_surviving_lost_jobs(self, super().launch, job_overrides,
                                              initial_job_idx)
