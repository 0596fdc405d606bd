"""Evaluate a checkpoint with the configured strategy, and score the base on the same tasks."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from kit.core import threads
from kit.core.diskwatch import DiskWatch
from kit.core.errors import KitError
from kit.core.log import get as get_logger
from kit.core.log import timed
from kit.core.results import Checkpoint, EvalResult
from kit.eval.base_scores import base_scores
from kit.eval.checks import check_adapter
from kit.eval.context import EvalContext
from kit.eval.resume import base_subject, checkpoint_subject, resume_scope
from kit.eval.session import session_scope
from kit.eval.strategies import auto, get_strategy

log = get_logger(__name__)


def score_line(scores: dict) -> str:
    return (
        ", ".join(f"{t}/{m}={v:.3f}" for t, ms in scores.items() for m, v in ms.items() if not m.endswith("stderr"))
        or "no scores"
    )


def evaluate(cfg: DictConfig, job_dir: Path, base: Path, checkpoint: Checkpoint, peers: list[Path] = ()) -> EvalResult:
    threads.apply(threads.choose(os.environ))  # `kit eval` starts here without training first
    log_dir = job_dir / "inspect_logs"
    specs = list(cfg.tasks.specs)
    ctx = EvalContext(
        checkpoint_kind=checkpoint.kind,
        checkpoint_path=checkpoint.path,
        base=base,
        tasks=specs,
        log_dir=log_dir,
        eval_cfg=cfg.eval,
        tmp_root=Path(cfg.eval.tmp_dir) if cfg.eval.tmp_dir else job_dir,
        trust_remote_code=cfg.model.trust_remote_code,
        limit=cfg.tasks.limit,
        peers=list(peers),
    )
    if checkpoint.kind == "adapter" and cfg.eval.strategy != "none":  # every strategy, every command
        check_adapter(checkpoint.path, job_dir, base)
    strategy, why = auto.resolve(ctx)
    ctx = replace(ctx, strategy=strategy)
    with session_scope():  # the command's session, else one for this checkpoint and its base scores
        with timed(log, f"eval ({strategy})") as t, DiskWatch(ctx.tmp_root, ignore=(ctx.log_dir,)) as disk:
            subject = checkpoint_subject(checkpoint.kind, checkpoint.path, checkpoint.content_hash, strategy)
            with resume_scope(subject):  # a rerun reuses the samples an interrupted attempt scored
                result = get_strategy(strategy)(ctx)
            t["detail"] = score_line(result["scores"])
        # measured, not declared: what the strategy wrote under its temp root and deleted again
        # (the Inspect log folder is left out: Inspect buffers samples there while it runs)
        result["temp_peak_bytes"] = max(disk.temp_peak_bytes, int(result.get("temp_peak_bytes") or 0))
        if strategy != "none" and not result.get("scores"):
            raise KitError(
                f"the {strategy} eval of {checkpoint.path} returned no scores for tasks {specs}; "
                "expected a score per task (the job is not marked done)"
            )
        base_result, base_seconds = {"scores": {}}, None
        if cfg.eval.base_scores and strategy != "none":
            with timed(log, "base scores") as t:
                with resume_scope(base_subject(base, strategy)):
                    base_result = base_scores(ctx)
                t["detail"] = score_line(base_result["scores"]) + (" (cached)" if base_result.get("cached") else "")
            base_seconds = t["seconds"]
    info = {k: v for k, v in result.items() if k not in ("scores",)}
    info["strategy"] = cfg.eval.strategy
    info["strategy_chosen"], info["why"] = strategy, why
    info["base_scores_cached"] = base_result.get("cached")
    info["base_scores_seconds"] = base_seconds
    # the base's Inspect logs (cached: where they were written): per-sample base scores for the paired tests
    info["base_logs"] = list(base_result.get("logs") or [])
    # what was evaluated, on what: W&B's eval run uses their artifacts (kit.core.wandb_artifacts)
    info["checkpoint"], info["base"] = checkpoint.to_json(), str(base)
    return EvalResult(
        scores=result["scores"],
        base_scores=base_result["scores"],
        info=info,
        temp_peak_bytes=int(result.get("temp_peak_bytes") or 0),
    )


def eval_entry(cfg: DictConfig, evaluated: EvalResult, command: str) -> dict:
    """One evaluation of a checkpoint, as ``summary.json`` keeps it in ``evals`` (appended, never replaced)."""
    settings = {k: cfg.eval[k] for k in ("batch_size", "max_tokens", "temperature", "seed", "device", "dtype")}
    return {
        "command": command,
        "when": time.time(),
        "strategy": cfg.eval.strategy,
        "tasks": list(cfg.tasks.specs),
        "limit": cfg.tasks.limit,
        "settings": settings,
        "scores": evaluated.scores,
        "base_scores": evaluated.base_scores,
        "eval": evaluated.info,
        "temp_peak_bytes": evaluated.temp_peak_bytes,
    }
