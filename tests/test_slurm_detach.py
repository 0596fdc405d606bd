"""Detached sweeps on a real single-node SLURM cluster (``slurm_cluster`` fixture,
launchers/local_slurm/start.sh): submit and exit, ``kit status``, ``kit collect``,
``--rerun-failed``; a requeued job restarting under the same run identity; one W&B run
id per job phase across a requeue and a later ``kit eval``."""

import json
import time

import pytest
from conftest import run_kit
from test_slurm import slurm, wait_for
from wandb_records import records

pytestmark = pytest.mark.slow

QUICK = [
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=10",
    "tasks.limit=10",
    "hydra/launcher=local_slurm",
    "launcher.detach=true",
]


def with_quick(*extra: str, detach: bool = True) -> list[str]:
    """QUICK with ``extra`` in place of the keys it sets (and without ``launcher.detach`` for an attached run)."""
    keys = {e.partition("=")[0] for e in extra} | (set() if detach else {"launcher.detach"})
    return [q for q in QUICK if q.partition("=")[0] not in keys] + list(extra)


def submit(sweep, ranks: str, kit_cache, cwd, *extra: str):
    args = ["train", "+experiment=rank_sweep", "-m", f"lora.rank={ranks}", f"hydra.sweep.dir={sweep}", *with_quick(*extra)]
    return run_kit(args, kit_cache, cwd, timeout=600)


def summary(job) -> dict:
    path = job / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def queued() -> set[str]:
    return {ln.split()[0] for ln in slurm("squeue", "-h", "-o", "%i %T").splitlines()}


def status(sweep, kit_cache, cwd, *flags: str):
    proc = run_kit(["status", str(sweep), *flags], kit_cache, cwd, timeout=600)
    rows = {
        int(ln.split("|")[1]): [c.strip() for c in ln.strip("|").split("|")]
        for ln in proc.stdout.splitlines()
        if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()
    }
    return proc, rows


def run_ids(job) -> dict[str, list[str]]:
    """Every W&B offline run file under a job dir (attempts included): {run id: [files]}."""
    ids: dict[str, list[str]] = {}
    for path in job.rglob("run-*.wandb"):
        named = path.stem.removeprefix("run-")  # W&B names the file after the run id
        run = next((r.run for r in records(path) if r.WhichOneof("record_type") == "run"), None)
        # a killed attempt may have died before W&B flushed its run record: its file name is all there is
        assert run is None or run.run_id == named, (path, run.run_id)
        ids.setdefault(named, []).append(str(path.relative_to(job)))
    return ids


def test_detached_sweep_status_collect_and_rerun_failed(slurm_cluster, kit_cache, tmp_path):
    sweep = tmp_path / "sweep"
    # four full epochs (248 steps, ~15 s of training): scancel's KILL reaches a job as SLURM's cancel does
    # (SIGTERM, then SIGKILL KillWait=5 s later, launchers/local_slurm/slurm.conf.in), so job #1 must still
    # be training 5 s after the kill; job #0 is still in SLURM for the refused re-run after it
    epochs = ("trainer.max_steps_per_epoch=null", "trainer.epochs=4")
    proc = submit(sweep, "4,16", kit_cache, tmp_path, "logger=none", "hydra.launcher.array_parallelism=2", *epochs)
    # the submitter is gone; the jobs are not done, SLURM holds them
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "this process exits now" in proc.stdout
    manifest = json.loads((sweep / "manifest.json").read_text())
    ids = [manifest["jobs"][n]["slurm_id"] for n in ("0", "1")]
    assert not any(summary(sweep / n).get("status") == "done" for n in ("0", "1"))
    assert set(ids) <= queued(), (ids, queued())
    assert not (sweep / "sweep_summary.json").exists()  # no summary of a sweep that has not run
    script = next((sweep / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script  # one array, at most array_parallelism at once

    # kill point #1 hard while it trains; #0 finishes on its own
    wait_for(lambda: summary(sweep / "1").get("status") == "running", 600, "job #1 to run")
    wait_for(lambda: (sweep / "1" / "metrics.jsonl").exists(), 600, "job #1 to train")
    assert summary(sweep / "1").get("status") == "running", "job #1 ended before the kill: the test needs it longer"
    slurm("scancel", "--signal=KILL", "--full", ids[1])

    # the same sweep attached, while SLURM still holds its jobs: refused, nothing submitted twice
    attached = with_quick(*epochs, detach=False)
    again = run_kit(
        ["train", "+experiment=rank_sweep", "-m", "lora.rank=4,16", f"hydra.sweep.dir={sweep}", *attached, "logger=none"],
        kit_cache,
        tmp_path,
        timeout=600,
    )
    assert again.returncode == 2 and "still in SLURM from an earlier submission" in again.stderr, again.stderr[-2000:]
    assert [e["submissions"] for e in json.loads((sweep / "manifest.json").read_text())["jobs"].values()] == [[i] for i in ids]
    wait_for(lambda: summary(sweep / "0").get("status") == "done", 600, "job #0 to finish")
    wait_for(lambda: ids[1] not in queued(), 60, "the killed job to leave the queue")
    proc, rows = status(sweep, kit_cache, tmp_path)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows[0][4] == "done" and rows[0][2] == manifest["jobs"]["0"]["run_id"]
    assert rows[1][4] == "failed" and "cancelled" in rows[1][6] and rows[1][3] == ids[1]

    proc = run_kit(["collect", str(sweep)], kit_cache, tmp_path)
    assert proc.returncode == 1 and "#1 lora.rank=16" in proc.stderr and "--rerun-failed" in proc.stderr
    table = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert table[0]["status"] == "done" and table[0]["scores"]["parity/mean"] is not None

    # rerun-failed resubmits #1 only; the sweep completes
    proc, _ = status(sweep, kit_cache, tmp_path, "--rerun-failed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resubmitting 1 job(s): #1" in proc.stdout and f"{sweep / '0'} already done" in proc.stdout
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert len(manifest["jobs"]["0"]["submissions"]) == 1 and len(manifest["jobs"]["1"]["submissions"]) == 2
    wait_for(lambda: summary(sweep / "1").get("status") == "done", 600, "the resubmitted job #1 to finish")
    proc, rows = status(sweep, kit_cache, tmp_path)
    print(proc.stdout)
    assert [rows[n][4] for n in (0, 1)] == ["done", "done"]
    proc = run_kit(["collect", str(sweep)], kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in json.loads((sweep / "sweep_summary.json").read_text())["jobs"]] == ["done", "done"]
    attempt = json.loads((sweep / "1" / "attempts" / "1" / "summary.json").read_text())
    assert attempt["status"] == "interrupted"  # the killed attempt, set aside and marked (never done)
    assert summary(sweep / "1")["run_id"] == manifest["jobs"]["1"]["run_id"] == attempt["run_id"]


def test_requeued_job_restarts_under_its_run_identity(slurm_cluster, kit_cache, tmp_path):
    sweep = tmp_path / "sweep"
    # long enough to be caught training (W&B offline: the default logger)
    proc = submit(sweep, "8", kit_cache, tmp_path, "trainer.max_steps_per_epoch=null", "trainer.epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job, entry = sweep / "0", json.loads((sweep / "manifest.json").read_text())["jobs"]["0"]
    wait_for(lambda: (job / "metrics.jsonl").exists(), 600, "the job to start training")
    slurm("scontrol", "requeue", entry["slurm_id"])
    requeued = time.time()
    # SLURM holds a requeued job for ~2 min (BeginTime); let it start as soon as it is pending again
    wait_for(lambda: "PENDING" in slurm("squeue", "-h", "-j", entry["slurm_id"], "-o", "%T"), 120, "the requeue")
    slurm("scontrol", "update", f"JobId={entry['slurm_id']}", "StartTime=now")
    wait_for(lambda: summary(job).get("status") == "done", 900, "the requeued job to finish")
    print(f"requeued job finished {time.time() - requeued:.0f} s after the requeue")
    done, attempt = summary(job), summary(job / "attempts" / "1")
    # the interrupted attempt is set aside (marked interrupted, never done); the new one trained from the base
    assert attempt["status"] in ("interrupted", "failed") and attempt["run_id"] == done["run_id"] == entry["run_id"]
    steps = [json.loads(ln)["step"] for ln in (job / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, done["train"]["steps"] + 1))  # every step from the base, none resumed
    assert len(steps) > 100  # 3 full epochs (62 steps each on the parity set)
    assert "restarted (SLURM restart 1)" in open(entry["stdout"]).read()
    # a later kit eval is a run of the same identity, its own W&B run (a failed one never marks the
    # job's own eval run failed): <run id>-kiteval<k>, k its place among the job's evaluations
    proc = run_kit(["eval", str(job), "tasks.limit=5"], kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = run_ids(job)
    print(json.dumps(ids, indent=1))
    rid = done["run_id"]
    # the export run logs the checkpoint artifact (its lineage edge: train -> export -> eval)
    assert set(ids) == {f"{rid}-train", f"{rid}-export", f"{rid}-eval", f"{rid}-verify", f"{rid}-kiteval1-eval"}, ids
    assert any(p.startswith("attempts/1/") for p in ids[f"{rid}-train"])  # the requeued attempt: same id
    assert len(ids[f"{rid}-eval"]) == 1  # the job's own eval run, untouched by kit eval


def test_preemption_signal_requeues_and_status_says_preempted(slurm_cluster, kit_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = submit(
        sweep,
        "8",
        kit_cache,
        tmp_path,
        "logger=none",
        "verify.after_train=false",
        "trainer.max_steps_per_epoch=null",
        "trainer.epochs=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job, entry = sweep / "0", json.loads((sweep / "manifest.json").read_text())["jobs"]["0"]
    wait_for(lambda: (job / "metrics.jsonl").exists(), 600, "the job to start training")
    slurm("scancel", "--signal=USR2", entry["slurm_id"])  # what SLURM sends before preempting (submitit's signal)
    wait_for(lambda: "PENDING" in slurm("squeue", "-h", "-j", entry["slurm_id"], "-o", "%T"), 120, "submitit to requeue the job")
    proc, rows = status(sweep, kit_cache, tmp_path)
    print(proc.stdout)
    assert rows[0][4] == "preempted" and "requeued (1 restart(s))" in rows[0][6]
    slurm("scontrol", "update", f"JobId={entry['slurm_id']}", "StartTime=now")
    wait_for(lambda: summary(job).get("status") == "done", 900, "the preempted job to finish")
    log = open(entry["stderr"]).read()
    assert "this job is preempted" in log  # submitit's handler: checkpoint() and requeue
    assert summary(job / "attempts" / "1")["status"] != "done" and summary(job)["run_id"] == entry["run_id"]
    proc, rows = status(sweep, kit_cache, tmp_path)
    assert rows[0][4] == "done"
