"""Config group ``logger``: one W&B run per job phase (job_type train / eval).

Offline by default: run files land in ``<job>/wandb/`` and need no account.
With ``logger=none`` every call here is a no-op.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from kit.core.identity import phase_run_id
from kit.core.wandb_artifacts import log_checkpoint_artifact as log_artifact_of
from kit.core.wandb_artifacts import use_checkpoint_artifact
from kit.core.wandb_tables import log_sample_tables


@contextmanager
def phase_run(logger_cfg, job_dir: Path, job_type: str, group: str, name: str, config: dict, run_id: str | None = None):
    """Open a W&B run for one phase of a job; yields the run (or None). With the job's
    ``run_id`` (kit.core.identity) the phase's W&B id is fixed: a requeue, a re-run or a
    later ``kit eval`` / ``kit verify`` resumes that run instead of creating a stray."""
    if logger_cfg.kind == "none" or logger_cfg.mode == "disabled":
        yield None
        return
    import wandb

    os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")  # else W&B prints a "use Weave" advert on every run
    run = wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        mode=str(logger_cfg.mode.value if hasattr(logger_cfg.mode, "value") else logger_cfg.mode),
        dir=str(job_dir),
        group=group,
        job_type=job_type,
        name=f"{name}-{job_type}",
        tags=list(logger_cfg.tags),
        config={**config, "kit_run_id": run_id} if run_id else config,
        reinit="create_new",
        **({"id": phase_run_id(run_id, job_type), "resume": "allow"} if run_id else {}),
        settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
    )
    define_metrics(run, job_type)
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()


def define_metrics(run, job_type: str) -> None:
    """Axes and summaries W&B charts group by without clicking: the loss of every train run of a
    sweep (one W&B group) on one ``train/step`` axis, its minimum kept in the summary."""
    if job_type == "train":
        run.define_metric("train/step")
        run.define_metric("train/*", step_metric="train/step")
        run.define_metric("train/loss", step_metric="train/step", summary="min,last")


def flat_scores(summary: dict) -> dict:
    flat = {}
    for prefix in ("scores", "base_scores"):
        for task, metrics in (summary.get(prefix) or {}).items():
            for metric, value in metrics.items():
                flat[f"{prefix}/{task}/{metric}"] = value
    return flat


def log_scores(run, entry: dict, job_run_id: str | None = None) -> None:
    """One ``kit eval`` result (an ``evals`` entry) into its eval run's summary; ``job_run_id``: the
    job's run id, which names the checkpoint's artifact (the eval run's own id is another)."""
    if run is None:
        return
    flat = {**flat_scores(entry), "eval/strategy": entry["strategy"], "timings/eval_s": entry["eval"]["seconds"]}
    run.log({k: v for k, v in flat.items() if not isinstance(v, str)})
    run.summary.update(flat)
    log_samples_and_lineage(run, entry.get("eval"), job_run_id)


def log_eval(run, summary: dict) -> None:
    """Scores, base scores and storage into the eval run's summary."""
    if run is None:
        return
    flat = flat_scores(summary)
    for key, value in summary["storage"].items():
        if isinstance(value, dict):  # the other checkpointer's estimate (kit.train.storage)
            flat[f"storage/estimate/{value['kind']}_checkpoint_bytes"] = value["checkpoint_bytes"]
        elif value is not None:
            flat[f"storage/{key}"] = value
    flat["checkpoint/bytes"] = summary["checkpoint"]["bytes"]
    for key, value in summary["timings"].items():
        flat[f"timings/{key}"] = value
    run.log(flat)
    run.summary.update(flat)
    log_samples_and_lineage(run, summary.get("eval"))


def log_samples_and_lineage(run, info: dict | None, job_run_id: str | None = None) -> None:
    """The eval's per-sample tables (kit.core.wandb_tables) and its inputs: the evaluated
    checkpoint's artifact and the base's (kit.core.wandb_artifacts). ``info``: the eval result's
    ``eval`` entry (its logs, base logs, checkpoint and base). W&B extras never fail an eval whose
    scores are in: a failure here is one warning line."""
    if not info:
        return
    try:
        log_sample_tables(run, info)
        if info.get("checkpoint") and info.get("base") and info["checkpoint"]["kind"] != "modifiers":
            use_checkpoint_artifact(run, info["checkpoint"], Path(info["base"]), info.get("artifact_kind"), run_id=job_run_id)
    except Exception as e:  # logged, never raised: the scores are already recorded
        print(f"kit: warning: W&B sample tables / artifacts not logged ({type(e).__name__}: {e})", file=sys.stderr)


def log_checkpoint_artifact(run, checkpoint, base: Path, kind: str | None = None, name: str | None = None, inputs=()) -> None:
    """What a job stored (adapter, full, merged, modifier, compressed model) as an artifact logged
    by ``run``, the base (and ``inputs``) as that run's inputs: kit.core.wandb_artifacts."""
    if run is None:
        return
    try:
        log_artifact_of(run, checkpoint, base, kind, name, inputs)
    except Exception as e:  # logged, never raised: the checkpoint is already on disk
        print(f"kit: warning: W&B artifact of {checkpoint} not logged ({type(e).__name__}: {e})", file=sys.stderr)
