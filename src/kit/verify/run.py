"""Verify one job's checkpoint and log the checks to its W&B verify run (after training, and for
``kit verify``); the caller records the verdict in summary.json (kit.core.record)."""

from __future__ import annotations

from pathlib import Path

from kit.core.results import Checkpoint
from kit.verify import verify_checkpoint
from kit.verify.report import log_table


def verify_job(cfg, job_dir: Path, base: Path, checkpoint: Checkpoint, peers: list[Path], run=None, checks=None) -> dict:
    """The checks' report (also written as verify.json / verify.md); the checks as a table in ``run``."""
    report = verify_checkpoint(cfg, job_dir, base, checkpoint, peers, checks)
    log_table(run, report)
    return report


def failed_checks(report: dict) -> list[str]:
    return [c["name"] for c in report["checks"] if not c["passed"]]


def verdict_line(report: dict) -> str:
    failed = failed_checks(report)
    return f"FAILED {failed}" if failed else f"{len(report['checks'])} checks passed"
