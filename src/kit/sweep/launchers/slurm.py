"""``hydra/launcher=submitit_slurm``: the sweep as one SLURM job array. Site settings (partition,
account, GPUs, setup lines) go in a profile that extends it (``slurm_site_example.yaml``).

No hang on hard crashes: job states are polled every ``POLL_S`` seconds (sacct, or scontrol where
accounting is off), so a job killed, out of memory or past its time limit ends the wait with its
SLURM state named."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from kit.core.errors import KitError
from kit.sweep.launcher import LauncherEntry
from kit.sweep.launchers.submitit import SubmititLauncher
from kit.sweep.slurm_client import RUNNING_STATES, slurm_states

SINFO_TIMEOUT_S = 30


@dataclass
class SlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.kit_launcher.launchers.SlurmLauncher"
    timeout_min: int = 240
    name: str = "kit-${name}"  # the SLURM job name squeue shows


class SlurmLauncher(SubmititLauncher):
    _EXECUTOR = "slurm"

    def states(self, jobs: list) -> dict[str, str]:
        return slurm_states([j.job_id for j in jobs])

    def live_jobs(self, manifest: dict) -> dict[int, str]:
        latest = {int(n): e["slurm_id"] for n, e in manifest["jobs"].items() if e.get("slurm_id")}
        states = slurm_states(list(latest.values())) if latest else {}
        return {n: states[i] for n, i in latest.items() if states.get(i) in RUNNING_STATES - {"UNKNOWN"}}


def check_cluster() -> None:
    """A SLURM cluster that answers here, before Hydra makes the sweep dir."""
    other = "expected a SLURM cluster here, or hydra/launcher=basic|submitit_local"
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise KitError(f"hydra/launcher uses SLURM (SlurmLauncher) but 'sbatch'/'sinfo' are not on PATH; {other}")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KitError(
            f"hydra/launcher uses SLURM (SlurmLauncher) but 'sinfo' got no answer in {SINFO_TIMEOUT_S} s; {other}"
        ) from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise KitError(f"hydra/launcher uses SLURM (SlurmLauncher) but the cluster does not answer (sinfo: {why}); {other}")


LAUNCHER = LauncherEntry(
    "submitit_slurm",
    SlurmConf,
    "submitit jobs on SLURM",
    needs=("submitit", "hydra_plugins.hydra_submitit_launcher"),
    executables=("sbatch",),
    check=check_cluster,
    tracks="slurm",
    detachable=True,
)
