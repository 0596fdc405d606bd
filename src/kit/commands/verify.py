"""``python -m kit verify <job dir | sweep dir> [key=value ...]``

Verifies every job's checkpoint in one process (one resident base for all of
them; the adapters check cycles every adapter of the sweep on it). Each job gets
``verify.json`` + ``verify.md``, a ``verify`` entry in ``summary.json`` and a
W&B ``job_type=verify`` run with the checks as a table. Exit status: 0 when
every check of every job passed, 1 when any failed, 2 for bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kit.core.cli_parser import target_and_overrides
from kit.core.errors import KitError
from kit.core.jobdir import (
    checkpoint_of,
    find_jobs,
    job_config,
    peer_adapters,
    read_summary,
)
from kit.eval.session import EvalSession
from kit.verify import check_names
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
            report = verify_job(
                cfg, job_dir, summary, checkpoint_of(job_dir, summary), peers, f"{summary.get('run_name', job_dir.name)}"
            )
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


def main(args: list[str]) -> int:

    parsed = target_and_overrides(args, USAGE)
    return 2 if parsed is None else run(*parsed)
