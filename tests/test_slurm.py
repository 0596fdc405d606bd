"""Sweeps through ``hydra/launcher=submitit_slurm`` on a real single-node SLURM cluster
(the ``slurm_cluster`` fixture starts it with launchers/local_slurm/start.sh).

The cluster keeps no accounting (no slurmdbd), so sacct fails and kit reads job
states from scontrol: the path a hard-killed job takes to end the wait."""

import json
import subprocess
import sys
import time

import pytest
from conftest import OFFLINE, run_kit

pytestmark = pytest.mark.slow

# Small and quick: the point is the launcher, not the learning.
# No verify after training: no test here asserts on it (tests/test_verify.py does).
QUICK = [
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=10",
    "tasks.limit=10",
    "logger=none",
    "verify.after_train=false",
    "hydra/launcher=local_slurm",
]


def sweep_args(sweep_dir) -> list[str]:
    return ["train", "+experiment=rank_sweep", "-m", "lora.rank=4,16", f"hydra.sweep.dir={sweep_dir}", *QUICK]


def summaries(sweep_dir) -> list[dict]:
    return [json.loads((sweep_dir / str(n) / "summary.json").read_text()) for n in (0, 1)]


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_two_point_sweep_through_slurm(slurm_cluster, kit_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_kit(sweep_args(sweep), kit_cache, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = summaries(sweep)
    assert [s["status"] for s in done] == ["done", "done"]
    assert [s["overrides"][0] for s in done] == ["lora.rank=4", "lora.rank=16"]
    ranks = [json.loads((sweep / str(n) / "adapter" / "adapter_config.json").read_text())["r"] for n in (0, 1)]
    assert ranks == [4, 16]
    assert done[1]["checkpoint"]["bytes"] > done[0]["checkpoint"]["bytes"]
    assert all(s["scores"]["parity"]["mean"] is not None and s["train"]["steps"] == 10 for s in done)
    # the jobs ran as SLURM jobs, which the controller saw complete
    job_ids = [line.split()[-1] for line in proc.stdout.splitlines() if "submitted as slurm job" in line]
    assert len(job_ids) == 2
    for job_id in job_ids:  # the result file lands before SLURM has finished COMPLETING the job
        wait_for(
            lambda job_id=job_id: "JobState=COMPLETED" in slurm("scontrol", "-o", "show", "job", job_id),
            60,
            f"SLURM to mark job {job_id} COMPLETED",
        )
    table = json.loads((sweep / "sweep_summary.json").read_text())
    assert [r["status"] for r in table["jobs"]] == ["done", "done"]


def running_task(index: int) -> str | None:
    lines = slurm("squeue", "-h", "-o", "%i %T").splitlines()
    return next((ln.split()[0] for ln in lines if ln.endswith(" RUNNING") and ln.split()[0].endswith(f"_{index}")), None)


def test_killed_job_ends_the_sweep_with_its_name_and_resume_reruns_only_it(slurm_cluster, kit_cache, tmp_path):
    import os

    sweep = tmp_path / "sweep"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(kit_cache)}
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kit", *sweep_args(sweep)], cwd=tmp_path, env=env, stdout=o, stderr=e, text=True
        )
        try:
            job = wait_for(lambda: running_task(1), 240, "sweep point #1 to run")
            time.sleep(2)  # inside kit's job by now
            slurm("scancel", "--signal=KILL", "--full", job)  # SLURM's cancel: SIGTERM, SIGKILL KillWait=5 s later
            killed = time.time()
            wait_for(lambda: "kit: job #1" in err.read_text(), 60, "the sweep to name the killed job")
            noticed = time.time() - killed
            rc = proc.wait(timeout=600)
        finally:
            proc.kill()
    stderr = err.read_text()
    print(f"killed job named {noticed:.1f} s after the kill; sweep ended {time.time() - killed:.1f} s after it")
    assert noticed < 30, noticed
    assert rc == 1, stderr[-3000:]
    error_lines = [ln for ln in stderr.splitlines() if ln.startswith("kit: error:")]
    assert len(error_lines) == 1
    assert "#1 lora.rank=16" in error_lines[0] and f"slurm job {job} cancelled" in error_lines[0]
    # the other job finished and is reported; the killed one is recorded as failed
    first, second = summaries(sweep)
    assert first["status"] == "done" and second["status"] == "failed" and "cancelled" in second["error"]
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [r["status"] for r in rows] == ["done", "failed"] and rows[0]["scores"]["parity/mean"] is not None
    assert "| 0 | 4 | done |" in (sweep / "sweep_summary.md").read_text()

    # resume: the same command skips the finished job, moves the killed attempt aside, reruns it
    finished = {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*") if p.is_file()}
    proc = run_kit(sweep_args(sweep), kit_cache, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{sweep / '0'} already done" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*") if p.is_file()} == finished
    assert [s["status"] for s in summaries(sweep)] == ["done", "done"]
    attempt = json.loads((sweep / "1" / "attempts" / "1" / "summary.json").read_text())
    assert attempt["status"] == "failed" and "cancelled" in attempt["error"]
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [r["status"] for r in rows] == ["done", "done"]
