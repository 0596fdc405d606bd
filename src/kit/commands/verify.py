"""``python -m kit verify <job dir | sweep dir> [key=value ...]``

Verifies every job's checkpoint in one process (one resident base for all of
them; the adapters check cycles every adapter of the sweep on it). Each job gets
``verify.json`` + ``verify.md``, a ``verify`` entry in ``summary.json`` and a
W&B ``job_type=verify`` run with the checks as a table. Exit status: 0 when
every check of every job passed, 1 when any failed, 2 for bad input.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from kit.core import threads
from kit.core.cli_parser import target_and_overrides
from kit.core.config import plain_config
from kit.core.errors import CheckpointChanged, KitError
from kit.core.identity import RunIdentity
from kit.core.jobdir import (
    JobDir,
    checkpoint_of,
    find_jobs,
    job_config,
    peer_adapters,
    read_summary,
)
from kit.core.locks import locked
from kit.core.record import record
from kit.core.summary import Status, Summary
from kit.eval.session import EvalSession
from kit.verify import check_names
from kit.verify.report import summary_entry, write_report
from kit.verify.run import verify_job

USAGE = "usage: python -m kit verify <job dir | sweep dir> [verify.checks=[...]] [verify.dtype=fp32] [key=value ...]"


def print_report(job: str, report: dict) -> None:
    for c in report["checks"]:
        print(f"{job}\t{c['name']}\t{'pass' if c['passed'] else 'FAIL'}\t{c['detail']}")


def overall_line(jobs: int, failed: list[str], errors: list[str]) -> str:
    """One line for the whole target: ``kit: verify: 3 of 4 jobs passed (failed: [...])``."""
    passed = jobs - len(failed) - len(errors)
    line = f"kit: verify: {passed} of {jobs} job{'s' if jobs != 1 else ''} passed"
    if failed:
        line += f" (failed: {failed})"
    if errors:
        line += f" (not verified: {errors})"
    return line


def run(target: Path, overrides: list[str]) -> int:
    threads.apply(threads.choose(os.environ))  # the thread choice of kit train: verify alone is as fast
    with EvalSession():  # this command's resident base: loaded once for every job, freed at the end
        return verify_all(target, overrides)


def verify_all(target: Path, overrides: list[str]) -> int:
    plans = []
    for job_dir in find_jobs(target):  # compose everything first: a bad override fails before any check
        summary = read_summary(job_dir)
        cfg = job_config(job_dir, summary, overrides)
        check_names(cfg)
        plans.append((job_dir, summary, cfg))
    peers = peer_adapters(plans)
    failed, errors = [], []
    for job_dir, summary, cfg in plans:
        try:
            with locked(job_dir, "job dir"):  # one writer per job dir
                report = verify_one(job_dir, summary, cfg, peers)
        except KitError as e:
            print(f"kit: error: {job_dir.name}: {e}", file=sys.stderr)
            errors.append(job_dir.name)
            continue
        print_report(job_dir.name, report)
        if not report["passed"]:
            failed.append(job_dir.name)
    print(overall_line(len(plans), failed, errors))
    if failed:
        print(f"kit: verify FAILED for {failed}; see verify.md in each job dir", file=sys.stderr)
    if errors:
        return 2
    return 1 if failed else 0


def verify_one(job_dir: Path, summary: dict, cfg, peers: list[Path]) -> dict:
    """Verify one job and record the verdict in its summary: verify decides whether the job is done
    (``verify.required``): a pass makes an unverified job done, a failure makes a done job unverified.
    A checkpoint that changed since it was recorded is a failed verify, not a skipped one."""
    job = JobDir(job_dir)
    identity = RunIdentity(summary.get("group", job_dir.name), summary.get("run_name", job_dir.name), summary.get("run_id"))
    with record(
        "kit verify", job=job, logger=cfg.logger, job_type="verify", identity=identity, config=plain_config(cfg), announce=False
    ) as rec:
        try:
            report = verify_job(cfg, job_dir, Path(summary["base_model"]), checkpoint_of(job_dir, summary), peers, rec.run)
        except CheckpointChanged as e:
            report = changed_report(job_dir, summary, str(e))
        rec.update["verify"] = summary_entry(report)
        rec.change = lambda s: decide(s, report["passed"], bool(cfg.verify.required))
    return report


def decide(summary: Summary, passed: bool, required: bool) -> None:
    if passed and summary.status == Status.UNVERIFIED:
        summary.status, summary.error = Status.DONE, None
    elif not passed and required and summary.status == Status.DONE:
        summary.status = Status.UNVERIFIED
        summary.error = f"kit verify failed {summary.verify.get('failed')} (see {summary.verify.get('markdown')})"


def changed_report(job_dir: Path, summary: dict, why: str) -> dict:
    """The report of a verify that found the checkpoint changed: one failed check, the reason, no figures."""
    check = {
        "name": "checkpoint_identity",
        "passed": False,
        "figures": {},
        "tolerance": {"content hash": "as recorded"},
        "detail": why,
        "seconds": 0.0,
    }
    report = {
        "passed": False,
        "job_dir": str(job_dir),
        "checkpoint": summary.get("checkpoint"),
        "base_model": summary.get("base_model"),
        "device": "-",
        "dtype": "-",
        "checks": [check],
        "verified_configuration": {"versions": {}, "python": "", "hardware": {}},
        "seconds": 0.0,
        "when": time.time(),
    }
    write_report(job_dir, report)
    return report


def main(args: list[str]) -> int:

    parsed = target_and_overrides(args, USAGE)
    return 2 if parsed is None else run(*parsed)
