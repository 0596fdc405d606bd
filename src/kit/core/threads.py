"""How many CPU threads a job should give torch: the cores it actually has.

torch sizes its intra-op pool from the CPUs it can see, not from the job's
share of them: a container with a 2-CPU quota on a 64-core host, or a SLURM
task with ``--cpus-per-task=2`` on a cluster that does not bind tasks to cores,
runs dozens of OpenMP threads on two cores' worth of time, and every parallel
region waits on threads that are not scheduled. So kit takes the smallest of
the limits it can see: ``SLURM_CPUS_PER_TASK``, the cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) and the CPU
affinity mask. A user who set ``OMP_NUM_THREADS`` has chosen: that number wins.

Those are the cores a job may use, not the ones it gets on a shared machine.
With other work already keeping the allowed CPUs busy, each extra thread only
waits at OpenMP's barriers for a time slice (measured on a 2-core machine at
load 15-20: 2.4 s per step of the default job with 2 threads, 0.27 s with 1).
So the last limit is the allowed CPUs' idle time, sampled for half a second
from ``/proc/stat`` as the job starts (``idle``, rounded to whole CPUs, at
least 1). The choice is made once per phase and recorded (``summary.json``
``train.threads``); set ``OMP_NUM_THREADS`` for a fixed, reproducible count.

Pure functions over what they are given (environment, file paths), so tests
can fake every source; ``apply`` is the only one that touches torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
IDLE_SAMPLE_S = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "OMP_NUM_THREADS" (the user's), or the limit that decided: slurm, cgroup, affinity, idle
    limits: dict[str, int] = field(default_factory=dict)  # every limit seen

    def as_dict(self) -> dict:
        return {"threads": self.threads, "source": self.source, "limits": dict(self.limits)}


def positive_int(text: str | None) -> int | None:
    """``text`` as an int >= 1, else None (unset, empty or malformed values are not a limit)."""
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def user_threads(env: Mapping[str, str]) -> int | None:
    """``OMP_NUM_THREADS`` as set by the user; OpenMP's nested form ``"4,2"`` gives its outer level."""
    text = env.get("OMP_NUM_THREADS")
    return positive_int(text.split(",")[0]) if text else None


def slurm_cpus(env: Mapping[str, str]) -> int | None:
    """CPUs per task from SLURM (set only when the job asked ``--cpus-per-task``)."""
    return positive_int(env.get("SLURM_CPUS_PER_TASK"))


def quota_cpus(quota: float, period: float) -> int | None:
    """Whole CPUs a CFS quota allows (rounded up: 1.5 CPUs can keep 2 threads busy half the time)."""
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cpu_max_cpus(path: Path) -> int | None:
    """cgroup v2 ``cpu.max``: ``"<quota> <period>"`` or ``"max <period>"`` (no limit)."""
    text = read_text(path)
    parts = text.split() if text else []
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return quota_cpus(float(parts[0]), float(parts[1]))
    except ValueError:
        return None


def cfs_cpus(folder: Path) -> int | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: no limit)."""
    quota = read_text(folder / "cpu.cfs_quota_us")
    period = read_text(folder / "cpu.cfs_period_us")
    try:
        return quota_cpus(float(quota), float(period)) if quota and period else None
    except ValueError:
        return None


def with_ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and every parent up to the mount: a parent's quota limits its children too."""
    parts = [p for p in path.strip().split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """The tightest CPU quota on this process's cgroups (v2 and v1), or None when there is none."""
    text = read_text(proc_cgroup) or "0::/\n"  # no /proc: look at the mount's own root
    found = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2 (unified)
            found += [cpu_max_cpus(d / "cpu.max") for d in with_ancestors(root, path)]
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu/ or cpu,cpuacct/
            for mount in (root / controllers, root / "cpu"):
                found += [cfs_cpus(d) for d in with_ancestors(mount, path)]
    limits = [n for n in found if n is not None]
    return min(limits) if limits else None


def cpu_times(stat_text: str) -> dict[int, tuple[int, int]]:
    """Per CPU, (idle + iowait, total) jiffies from ``/proc/stat``'s ``cpuN`` lines."""
    times = {}
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 5:
            values = [int(f) for f in fields]
            times[int(name[3:])] = (values[3] + values[4], sum(values[:8]))
    return times


def idle_cpus(before: str, after: str, allowed: set[int] | None = None) -> int | None:
    """Whole CPUs left idle between two ``/proc/stat`` samples, over the ``allowed`` CPUs
    (all when None); rounded, at least 1. None when the samples show no time passing."""
    t0, t1 = cpu_times(before), cpu_times(after)
    cpus = [c for c in t1 if c in t0 and (allowed is None or c in allowed)]
    idle = total = 0.0
    for c in cpus:
        d_total = t1[c][1] - t0[c][1]
        if d_total > 0:
            idle += (t1[c][0] - t0[c][0]) / d_total
            total += 1
    if total == 0:
        return None
    return max(1, math.floor(idle + 0.5))


def sample_idle_cpus(stat: Path = PROC_STAT, seconds: float = IDLE_SAMPLE_S) -> int | None:
    """Idle CPUs among this process's allowed ones, over ``seconds`` (None where unreadable)."""
    before = read_text(stat)
    if before is None:
        return None
    time.sleep(seconds)
    after = read_text(stat) or ""
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    return idle_cpus(before, after, allowed)


def affinity_cpus() -> int | None:
    """CPUs this process may run on (SLURM and taskset bind through this mask)."""
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count()


def choose(
    env: Mapping[str, str],
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_SELF_CGROUP,
    affinity: int | None = None,
    idle: int | None = -1,
) -> ThreadChoice:
    """The thread count for a job. ``affinity`` defaults to this process's mask; ``idle``
    to a ``/proc/stat`` sample (pass None to leave it out). ``OMP_NUM_THREADS`` skips both."""
    user = user_threads(env)
    limits = {
        "slurm": slurm_cpus(env),
        "cgroup": cgroup_cpus(cgroup_root, proc_cgroup),
        "affinity": affinity if affinity is not None else affinity_cpus(),
    }
    if user is None:
        limits["idle"] = sample_idle_cpus() if idle == -1 else idle
    seen = {name: n for name, n in limits.items() if n is not None}
    if user is not None:
        return ThreadChoice(user, "OMP_NUM_THREADS", seen)
    if not seen:
        return ThreadChoice(1, "default", seen)
    source = min(seen, key=lambda name: seen[name])
    return ThreadChoice(seen[source], source, seen)


def per_process(choice: ThreadChoice, nproc: int) -> int:
    """Threads for each of ``nproc`` worker processes sharing the job's cores (at least one)."""
    if choice.source == "OMP_NUM_THREADS":
        return choice.threads  # the user's number is per process, as OpenMP reads it
    return max(1, choice.threads // max(1, nproc))


def apply(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count (and MKL's, through torch) to the choice."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
