"""Resume: a failed job is re-run (its attempt kept), a finished one never touched."""

import json

import pytest
from conftest import run_kit

from kit.core.jobdir import is_done, mark_failed, set_aside, write_summary


def test_set_aside_keeps_every_attempt_and_never_moves_a_done_job(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    write_summary(job, {"status": "running"})
    (job / "adapter").mkdir()
    (job / "adapter" / "adapter_model.safetensors").write_bytes(b"partial")
    assert set_aside(job) == job / "attempts" / "1"
    assert sorted(p.name for p in job.iterdir()) == ["attempts"]
    assert (job / "attempts" / "1" / "adapter" / "adapter_model.safetensors").read_bytes() == b"partial"
    mark_failed(job, ["lora.rank=4"], "killed")
    assert json.loads((job / "summary.json").read_text())["status"] == "failed"
    (job / "notes.txt").write_text("not kit's")
    assert set_aside(job) == job / "attempts" / "2"
    assert set_aside(job) is None  # nothing left to move
    assert (job / "notes.txt").read_text() == "not kit's"  # only what a job writes moves

    write_summary(job, {"status": "done"})
    before = (job / "summary.json").read_text()
    assert set_aside(job) is None
    mark_failed(job, [], "must not land")
    assert is_done(job) and (job / "summary.json").read_text() == before


@pytest.mark.slow
def test_basic_sweep_reports_a_failed_job_and_resume_reruns_only_it(kit_cache, tmp_path):
    """Job #1's eval.tmp_dir does not exist: it fails after training, job #0 still runs and is
    reported. Once the dir exists, the same command re-runs #1 only."""
    sweep, ok, missing = tmp_path / "sweep", tmp_path / "tmp_ok", tmp_path / "tmp_missing"
    ok.mkdir()
    args = [
        "train",
        "-m",
        "eval=merge",  # the strategy that writes a temporary model into eval.tmp_dir
        f"eval.tmp_dir={ok},{missing}",
        f"hydra.sweep.dir={sweep}",
        "trainer.epochs=1",
        "trainer.max_steps_per_epoch=5",
        "tasks.limit=10",
        "eval.base_scores=false",
        "logger=none",
        "verify.after_train=false",
    ]
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: error:")]
    assert len(errors) == 1 and "#1 " in errors[0] and "FileNotFoundError" in errors[0], proc.stderr[-2000:]
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [r["status"] for r in rows] == ["done", "failed"]

    finished = {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*") if p.is_file()}
    missing.mkdir()
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*") if p.is_file()} == finished
    attempt = json.loads((sweep / "1" / "attempts" / "1" / "summary.json").read_text())
    assert attempt["status"] == "failed" and "FileNotFoundError" in attempt["error"]
    assert (sweep / "1" / "attempts" / "1" / "adapter").is_dir()  # the failed attempt's files are kept
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "done"
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [r["status"] for r in rows] == ["done", "done"]
