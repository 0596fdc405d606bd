"""``hydra/launcher=submitit_local``: every sweep point as a local process (submitit's local executor),
all at once; the sweep as submitit_slurm runs it, without a cluster."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.utils import JobReturn

from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from kit.sweep.launcher import LauncherEntry
from kit.sweep.launchers.submitit import SubmititLauncher


@dataclass
class LocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.kit_launcher.launchers.LocalLauncher"
    timeout_min: int = 240


class LocalLauncher(SubmititLauncher):
    _EXECUTOR = "local"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.detach:  # local workers are this process's children: they cannot outlive it
            print(
                "kit: error: launcher.detach=true needs a cluster; expected hydra/launcher=submitit_slurm "
                "(or local_slurm); submitit_local jobs end with the submitting process",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return super().launch(job_overrides, initial_job_idx)


LAUNCHER = LauncherEntry(
    "submitit_local",
    LocalConf,
    "submitit processes on this machine",
    needs=("submitit", "hydra_plugins.hydra_submitit_launcher"),
)
