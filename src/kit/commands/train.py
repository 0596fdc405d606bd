"""Hydra entry points. Kept in an importable module (not __main__) so submitit
can pickle the task function and run it on a worker."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kit.core.config import conf_dir, redact_overrides, redact_yaml_files, register_resolvers
from kit.core.errors import KitError
from kit.core.identity import RunIdentity
from kit.core.jobdir import point_overrides
from kit.core.log import get as get_logger
from kit.core.log import quiet_warnings, setup
from kit.core.summary import Status
from kit.eval.session import EvalSession
from kit.job.pipeline import run_job
from kit.sweep.report import human_bytes
from kit.sweep.rows import sweep_group

register_resolvers()
log = get_logger(__name__)


def job_identity() -> tuple[Path, str, str, list[str]]:
    """(job dir, W&B group, run name, overrides) for the running Hydra job."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    overrides = redact_overrides(list(hc.overrides.task))  # as saved and logged: no secrets
    own = point_overrides(overrides)
    if hc.mode == RunMode.MULTIRUN:
        group = sweep_group(Path(hc.sweep.dir))
        name = ",".join(o for o in own if not o.startswith("+experiment")) or f"job{hc.job.num}"
    else:
        group = f"{job_dir.parent.name}-{job_dir.name}"
        name = group
    return job_dir, group, name, overrides


def hide_secrets(job_dir: Path) -> None:
    """Hydra has just written the job's ``.hydra/`` files from the raw command line: rewrite them
    with secrets redacted, and redact ``sys.argv`` (already parsed) before W&B records it."""
    redact_yaml_files(sorted((job_dir / ".hydra").glob("*.yaml")))
    sys.argv[:] = redact_overrides(sys.argv)


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def train_main(cfg: DictConfig) -> dict:
    setup()  # again inside the job: Hydra has just opened this job's log file (kit.core.log)
    job_dir, group, name, overrides = job_identity()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    hide_secrets(job_dir)
    try:
        # quiet_warnings: also on a submitit worker, where kit.__main__ does not run;
        # EvalSession: the job's resident base / vLLM server (eval and verify share them), closed after
        with quiet_warnings(), EvalSession():
            # checked: `python -m kit train` checked every point before Hydra started (kit.sweep.preflight)
            summary = run_job(cfg, job_dir, RunIdentity(group, name), overrides, checked=True).to_json()
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        if multirun:
            return {"status": "failed", "job_dir": str(job_dir), "error": str(e)}
        raise SystemExit(2) from None
    if multirun:
        log.info("job %s %s: %s", job_dir, summary["status"], score_text(summary) or summary.get("error") or "")
    else:
        print("\n".join(result_lines(summary)))
        if summary["status"] != Status.DONE:  # unverified: the scores are shown, but they are not a result
            print(f"kit: error: job {job_dir} ended {summary['status']}: {summary.get('error')}", file=sys.stderr)
            raise SystemExit(1)
    return {"status": summary["status"], "job_dir": str(job_dir), "error": summary.get("error")}


# ---------------------------------------------------------------- the result a user reads last


def score_text(summary: dict) -> str:
    """``parity/mean 1.000 (base 0.000, +1.000)`` per task metric (standard errors left out)."""
    base = summary.get("base_scores") or {}
    parts = []
    for task, metrics in (summary.get("scores") or {}).items():
        for metric, value in metrics.items():
            if metric.endswith("stderr"):
                continue
            b = (base.get(task) or {}).get(metric)
            vs = f" (base {b:.3f}, {value - b:+.3f})" if b is not None else " (base not scored)"
            parts.append(f"{task}/{metric} {value:.3f}{vs}")
    return "; ".join(parts)


def modifier_score_lines(summary: dict) -> list[str]:
    """A modifier job's scores as a table, one row per modifier (and the base), one column per task:
    whether each modifier learned its own task and left the others alone, at a glance."""
    scores, base = summary.get("scores") or {}, summary.get("base_scores") or {}
    names = list(summary["modifiers"])
    tasks = list(dict.fromkeys(key.split("/", 1)[1] for key in scores))
    if not tasks:
        return ["  score       no tasks scored (eval=none)"]
    width = max(len(t) for t in [*tasks, "0.000"])
    label = max(len(n) for n in [*names, "base"])

    def row(name: str, values: dict) -> str:
        cells = [f"{values[t]['mean']:.3f}" if "mean" in values.get(t, {}) else "-" for t in tasks]
        return f"    {name:<{label}}  " + "  ".join(f"{c:>{width}}" for c in cells)

    base_row = {t: next((base[k] for k in base if k.endswith(f"/{t}")), {}) for t in tasks}
    lines = ["  score       mean per task (columns) of each modifier (rows) and of the base without one"]
    lines.append(f"    {'':<{label}}  " + "  ".join(f"{t:>{width}}" for t in tasks))
    lines.append(row("base", base_row))
    lines += [row(n, {t: scores.get(f"{n}/{t}", {}) for t in tasks}) for n in names]
    return lines


def verify_text(summary: dict) -> str:
    v = summary.get("verify")
    if not v and summary.get("modifiers") is not None:  # kit verify takes training jobs
        return "not a phase of phase=modifier: each modifier is scored on its own tasks above"
    if not v:
        return "not run (verify.after_train=false; run: python -m kit verify <job dir>)"
    if v.get("passed"):
        return f"passed ({Path(summary['job_dir']) / v.get('markdown', 'verify.md')})"
    return f"FAILED {v.get('failed')} (see {Path(summary['job_dir']) / v.get('markdown', 'verify.md')})"


def times_text(timings: dict, base_cached: bool = False) -> str:
    names = (
        ("train_s", "train"),
        ("eval_s", "eval"),
        ("base_scores_s", "base scores"),
        ("verify_s", "verify"),
        ("total_s", "total"),
    )
    text = [
        f"{label} {timings[k]:.1f} s" + (" (cached)" if k == "base_scores_s" and base_cached else "")
        for k, label in names
        if timings.get(k) is not None
    ]
    return ", ".join(text)


def result_lines(summary: dict) -> list[str]:
    """The block ``kit train`` ends with: where the job is, what it scored, whether it verified, how long
    it took, what it stored and where to look next."""
    job = Path(summary["job_dir"])
    ck = summary.get("checkpoint") or {}
    lines = [f"kit: job {summary['status']}: {job}"]
    if summary.get("modifiers") and summary.get("scores") is not None:
        lines += modifier_score_lines(summary)
    elif summary.get("scores") is not None:
        lines.append(f"  score       {score_text(summary) or 'no tasks scored (eval=none)'}")
    lines.append(f"  verify      {verify_text(summary)}")
    cached = bool((summary.get("eval") or {}).get("base_scores_cached"))
    lines.append(f"  time        {times_text(summary.get('timings') or {}, cached)}")
    if ck:
        stored = (summary.get("storage") or {}).get("persistent_bytes")
        lines.append(
            f"  checkpoint  {ck['kind']}, {human_bytes(ck['bytes'])} ({ck['bytes']} bytes) in {ck['path']}"
            + (f"; job dir {human_bytes(stored)}" if stored is not None else "")
        )
    if (job / "inspect_logs").is_dir():
        lines.append(f"  look        inspect view --log-dir {job / 'inspect_logs'}")
    elif summary.get("modifiers") and (job / "modifiers").is_dir():  # each modifier's logs, one viewer
        lines.append(f"  look        inspect view --log-dir {job / 'modifiers'}")
        lines.append(f"  serve       python -m kit serve serve.registry={job}")
    offline = sorted((job / "wandb").glob("offline-run-*"))
    if offline:
        lines.append(f"  W&B         wandb sync {job / 'wandb'}/offline-run-*   ({len(offline)} offline run(s))")
    return lines
