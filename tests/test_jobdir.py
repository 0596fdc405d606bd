"""A job dir on disk (kit.core.jobdir.JobDir): summaries that survive concurrent writers, and an
unfinished attempt set aside whole, including the outputs of a phase JobDir was never told about."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit.core.jobdir import JobDir
from kit.core.summary import Status, Summary

APPENDS = 300

WRITER = textwrap.dedent(
    """
    import sys
    from kit.core.jobdir import JobDir
    job, who, n = JobDir(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        job.update(lambda s: s.evals.append({"who": who, "i": i}))
    """
)


def test_two_writers_racing_lose_nothing(tmp_path):
    """Two processes x 300 read-modify-write appends: every entry survives and the file stays a summary
    (before: 57 of 601 entries survived, 9 FileNotFoundErrors, the file ended 'unreadable')."""
    job = JobDir(tmp_path / "job")
    job.path.mkdir()
    job.write(Summary(status=Status.DONE, job_dir=str(job.path), evals=[{"who": "train", "i": 0}]))
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(job.path), who, str(APPENDS)], stderr=subprocess.PIPE, text=True)
        for who in ("eval", "verify")
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    summary = job.read()
    assert summary.status == Status.DONE
    assert len(summary.evals) == 1 + 2 * APPENDS
    for who in ("eval", "verify"):
        assert [e["i"] for e in summary.evals if e["who"] == who] == list(range(APPENDS))  # in order, none lost
    assert not list(job.path.glob(".summary.json.*tmp"))  # no temp file left behind


def test_an_attempt_is_set_aside_whole_and_nothing_else(tmp_path):
    job = JobDir(tmp_path / "job")
    job.path.mkdir()
    (job / "notes.txt").write_text("the user's own file in a shared run dir")
    job.write({"status": Status.RUNNING, "job_dir": str(job.path)})
    job.output("adapter").mkdir()
    job.output("compressed_by_a_new_phase").mkdir()  # a name JobDir has no entry for
    (job / "train.log").write_text("Hydra's job log")
    (job / ".hydra").mkdir()
    dest = job.set_aside()
    assert dest == job.path / "attempts" / "1"
    assert {p.name for p in dest.iterdir()} == {
        "summary.json",
        ".kit_outputs",
        "adapter",
        "compressed_by_a_new_phase",
        "train.log",
        ".hydra",
    }
    assert {p.name for p in job.path.iterdir()} == {"notes.txt", "attempts"}
    assert json.loads((dest / "summary.json").read_text())["status"] == Status.INTERRUPTED


def test_a_done_job_is_never_set_aside_and_an_output_name_is_one_name(tmp_path):
    job = JobDir(tmp_path)
    job.write({"status": Status.DONE, "job_dir": str(tmp_path)})
    job.output("adapter").mkdir()
    assert job.set_aside() is None and (tmp_path / "adapter").is_dir()
    for bad in ("a/b", "..", "attempts", ""):
        try:
            job.output(bad)
        except ValueError:
            continue
        raise AssertionError(f"output name {bad!r} accepted")


def test_summary_keeps_keys_it_does_not_know(tmp_path):
    job = JobDir(tmp_path)
    job.write({"status": Status.DONE, "job_dir": str(tmp_path), "from_a_newer_kit": {"x": 1}})
    job.update(lambda s: s.evals.append({"k": 1}))
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["from_a_newer_kit"] == {"x": 1} and data["evals"] == [{"k": 1}]


@pytest.mark.slow
def test_every_name_in_a_trained_job_dir_is_one_jobdir_knows(trained_job: Path):
    """A phase that writes a path without asking JobDir for it would be missed by set_aside."""
    job = JobDir(trained_job)
    known = {p.name for p in job.attempt_files()} | {".kit.lock", JobDir.SUMMARY_LOCK}
    assert sorted(p.name for p in trained_job.iterdir() if p.name not in known) == []
