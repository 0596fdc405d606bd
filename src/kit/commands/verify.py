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

from kit.core.errors import KitError

USAGE = "usage: python -m kit verify <job dir | sweep dir> [verify.checks=[...]] [verify.dtype=fp32] [key=value ...]"


def verify_job(cfg, job_dir: Path, summary: dict, checkpoint: dict, peers: list[Path], run_name: str) -> dict:
    """Verify one job, write its report, reference it in summary.json and log it to W&B."""
    from kit.stages.job import plain_config, read_summary, write_summary
    from kit.stages.verify import verify_checkpoint
    from kit.stages.verify.report import log_table, summary_entry
    from kit.core.wandb_logger import phase_run

    base = Path(summary["base_model"])
    with phase_run(cfg.logger, job_dir, "verify", summary.get("group", job_dir.name), run_name, plain_config(cfg)) as run:
        report = verify_checkpoint(cfg, job_dir, base, checkpoint, peers)
        log_table(run, report)
    fresh = read_summary(job_dir) or summary  # re-read: change only the verify entry
    fresh["verify"] = summary_entry(report)
    write_summary(job_dir, fresh)
    return report


def print_report(job: str, report: dict) -> None:
    for c in report["checks"]:
        print(f"{job}\t{c['name']}\t{'pass' if c['passed'] else 'FAIL'}\t{c['detail']}")


def run(target: Path, overrides: list[str]) -> int:
    from kit.commands.eval import checkpoint_of, find_jobs, job_config, peer_adapters
    from kit.stages.job import read_summary
    from kit.stages.verify import check_names

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
            report = verify_job(cfg, job_dir, summary, checkpoint_of(job_dir, summary), peers,
                                f"{summary.get('run_name', job_dir.name)}")
        except KitError as e:
            print(f"kit: error: {job_dir.name}: {e}", file=sys.stderr)
            errors.append(job_dir.name)
            continue
        print_report(job_dir.name, report)
        if not report["passed"]:
            failed.append(job_dir.name)
    if failed:
        print(f"kit: verify FAILED for {failed}; see verify.md in each job dir", file=sys.stderr)
    if errors:
        return 2
    return 1 if failed else 0


def main(args: list[str]) -> int:
    from kit.commands.eval import target_and_overrides

    parsed = target_and_overrides(args, USAGE)
    return 2 if parsed is None else run(*parsed)
