"""Verify one job dir: run the checks, write ``verify.json``/``verify.md``, record the result in
``summary.json`` and log it to W&B (used after training and by ``kit verify``)."""

from __future__ import annotations

from pathlib import Path

from kit.core.config import plain_config
from kit.core.jobdir import read_summary, write_summary
from kit.core.results import Checkpoint
from kit.core.wandb_logger import phase_run
from kit.verify import verify_checkpoint
from kit.verify.report import log_table, summary_entry


def verify_job(cfg, job_dir: Path, summary: dict, checkpoint: Checkpoint, peers: list[Path], run_name: str) -> dict:
    """Verify one job, write its report, reference it in summary.json and log it to W&B."""
    base = Path(summary["base_model"])
    with phase_run(
        cfg.logger,
        job_dir,
        "verify",
        summary.get("group", job_dir.name),
        run_name,
        plain_config(cfg),
        run_id=summary.get("run_id"),
    ) as run:
        report = verify_checkpoint(cfg, job_dir, base, checkpoint, peers)
        log_table(run, report)
    fresh = read_summary(job_dir) or summary  # re-read: change only the verify entry
    fresh["verify"] = summary_entry(report)
    write_summary(job_dir, fresh)
    return report
