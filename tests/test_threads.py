"""kit.core.threads: the thread count from the cores a job has, every source faked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kit.core import threads


def v2(tmp_path: Path, cpu_max: str, path: str = "/") -> tuple[Path, Path]:
    """A fake cgroup v2 mount with ``cpu.max`` in the process's own cgroup folder."""
    root = tmp_path / "cgroup"
    folder = root.joinpath(*[p for p in path.split("/") if p])
    folder.mkdir(parents=True)
    (folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def v1(tmp_path: Path, quota: str, period: str = "100000", mount: str = "cpu,cpuacct") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / mount).mkdir(parents=True)
    (root / mount / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / mount / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"4:memory:/x\n3:{mount}:/\n1:name=systemd:/\n")
    return root, proc


def test_affinity_alone_decides(tmp_path):
    root, proc = v2(tmp_path, "max 100000")
    choice = threads.choose({}, root, proc, affinity=6, idle=None)
    assert (choice.threads, choice.source) == (6, "affinity")
    assert choice.limits == {"affinity": 6}


def test_cgroup_v2_quota_rounds_up(tmp_path):
    root, proc = v2(tmp_path, "150000 100000", path="/job.slice/kit")
    choice = threads.choose({}, root, proc, affinity=64, idle=None)
    assert (choice.threads, choice.source) == (2, "cgroup")


def test_cgroup_v2_parent_quota_limits_child(tmp_path):
    root, proc = v2(tmp_path, "max 100000", path="/a/b")
    (root / "a" / "cpu.max").write_text("300000 100000\n")
    assert threads.choose({}, root, proc, affinity=64, idle=None).threads == 3


def test_cgroup_v1_quota(tmp_path):
    root, proc = v1(tmp_path, "400000")
    choice = threads.choose({}, root, proc, affinity=32, idle=None)
    assert (choice.threads, choice.source) == (4, "cgroup")


def test_cgroup_v1_no_quota(tmp_path):
    root, proc = v1(tmp_path, "-1", mount="cpu")
    assert threads.choose({}, root, proc, affinity=8, idle=None).source == "affinity"


def test_slurm_cpus_per_task(tmp_path):
    root, proc = v2(tmp_path, "max 100000")
    choice = threads.choose({"SLURM_CPUS_PER_TASK": "3"}, root, proc, affinity=64, idle=None)
    assert (choice.threads, choice.source) == (3, "slurm")
    assert choice.limits == {"slurm": 3, "affinity": 64}


def test_smallest_limit_wins(tmp_path):
    root, proc = v2(tmp_path, "800000 100000")
    choice = threads.choose({"SLURM_CPUS_PER_TASK": "16"}, root, proc, affinity=4, idle=None)
    assert (choice.threads, choice.source) == (4, "affinity")
    assert choice.limits == {"slurm": 16, "cgroup": 8, "affinity": 4}


def test_user_omp_num_threads_wins(tmp_path):
    root, proc = v2(tmp_path, "100000 100000")
    choice = threads.choose({"OMP_NUM_THREADS": "5", "SLURM_CPUS_PER_TASK": "2"}, root, proc, affinity=2, idle=None)
    assert (choice.threads, choice.source) == (5, "OMP_NUM_THREADS")
    assert threads.choose({"OMP_NUM_THREADS": "3,1"}, root, proc, affinity=8, idle=None).threads == 3


@pytest.mark.parametrize("bad", ["", "0", "-2", "many"])
def test_malformed_values_are_not_limits(tmp_path, bad):
    root, proc = v2(tmp_path, "garbage")
    choice = threads.choose({"OMP_NUM_THREADS": bad, "SLURM_CPUS_PER_TASK": bad}, root, proc, affinity=7, idle=None)
    assert (choice.threads, choice.source) == (7, "affinity")


def test_missing_cgroup_files(tmp_path):
    choice = threads.choose({}, tmp_path / "nothing", tmp_path / "no_proc", affinity=2, idle=None)
    assert (choice.threads, choice.source) == (2, "affinity")


def stat(*cpus: tuple[int, int]) -> str:
    """A /proc/stat text: per CPU (busy, idle) jiffies (user and idle fields; iowait 0)."""
    total = [sum(c[0] for c in cpus), sum(c[1] for c in cpus)]
    lines = [f"cpu  {total[0]} 0 0 {total[1]} 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cpus)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n"


def test_idle_cpus_from_proc_stat():
    before = stat((100, 100), (100, 100), (100, 100), (100, 100))
    # over the sample: CPU 0 and 1 fully busy, CPU 2 idle, CPU 3 idle 60 %
    after = stat((150, 100), (150, 100), (100, 150), (120, 130))
    assert threads.idle_cpus(before, after) == 2  # 1.6 idle CPUs round to 2
    assert threads.idle_cpus(before, after, allowed={0, 1}) == 1  # none idle: still 1 thread
    assert threads.idle_cpus(before, after, allowed={2, 3}) == 2
    assert threads.idle_cpus(before, before) is None  # no time passed: no limit


def test_busy_machine_gets_one_thread(tmp_path):
    root, proc = v2(tmp_path, "max 100000")
    choice = threads.choose({}, root, proc, affinity=2, idle=1)
    assert (choice.threads, choice.source) == (1, "idle")
    assert choice.limits == {"affinity": 2, "idle": 1}


def test_idle_sample_reads_proc_stat(tmp_path):
    path = tmp_path / "stat"
    path.write_text(stat((10, 10), (10, 10)))
    assert threads.sample_idle_cpus(path, seconds=0) is None  # the same file twice: no time passed
    assert threads.sample_idle_cpus(tmp_path / "missing", seconds=0) is None


def test_per_process_split():
    shared = threads.ThreadChoice(4, "affinity", {"affinity": 4})
    assert [threads.per_process(shared, n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]
    user = threads.ThreadChoice(3, "OMP_NUM_THREADS", {})
    assert threads.per_process(user, 2) == 3


def test_apply_sets_torch_threads():
    """In a fresh process (thread pools are per process), apply() changes torch's count."""
    code = (
        "import torch; from kit.core import threads; "
        "threads.apply(threads.ThreadChoice(3, 'affinity')); print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
