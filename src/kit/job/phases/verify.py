"""Phase ``verify`` (``verify.after_train``): every eval path of the fresh checkpoint gives the same
answer (kit.verify). Verify decides: with ``verify.required`` (the default) a failed verify ends the
job ``unverified``, not ``done`` (its results are kept, the job runs again on the next ``kit train``);
``verify.required=false`` records the failure and ends ``done``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kit.core.log import get as get_logger
from kit.core.summary import Status
from kit.job.phase import JobContext, Phase
from kit.verify import check_names
from kit.verify.report import summary_entry
from kit.verify.run import failed_checks, verdict_line, verify_job

log = get_logger(__name__)


def inspect_runs(cfg: DictConfig) -> bool:
    """A job with eval=none trains and exports only: its verify runs no Inspect check."""
    return str(cfg.eval.strategy) != "none"


class VerifyPhase(Phase):
    name = "verify"
    what = "prove every eval path gives the same answer; a failure ends the job unverified (verify.required)"

    def applies(self, cfg: DictConfig) -> bool:
        return bool(cfg.verify.after_train)

    def check(self, cfg: DictConfig, base: Path) -> None:
        if self.applies(cfg):
            check_names(cfg, inspect_ran=inspect_runs(cfg))

    def run(self, ctx: JobContext) -> None:
        checks = check_names(ctx.cfg, inspect_ran=inspect_runs(ctx.cfg))
        skipped = [str(c) for c in ctx.cfg.verify.checks if str(c) not in checks]
        with ctx.record("verify", job_type="verify") as rec:
            report = verify_job(ctx.cfg, ctx.job.path, ctx.base, ctx.checkpoint, [], rec.run, checks)
            rec.detail = verdict_line(report)
            entry = summary_entry(report)
            if skipped:
                entry["skipped"] = {name: "eval=none: no Inspect eval to compare" for name in skipped}
            rec.update["verify"] = entry
        if report["passed"]:
            return
        failed = failed_checks(report)
        log.warning("verify FAILED for %s: %s; see %s", ctx.job, failed, ctx.job / "verify.md")
        if ctx.cfg.verify.required:
            ctx.notes["status"] = Status.UNVERIFIED
            ctx.summary.error = (
                f"verify failed {failed} (see {ctx.job / 'verify.md'}); the scores are not a result (verify.required=true)"
            )


PHASE = VerifyPhase()
