"""Evaluate a checkpoint with the configured strategy, and score the base on the same tasks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from kit.eval.strategies.vllm import STANDIN, real_vllm

log = get_logger(__name__)


def score_line(scores: dict) -> str:
    return (
        ", ".join(f"{t}/{m}={v:.3f}" for t, ms in scores.items() for m, v in ms.items() if not m.endswith("stderr"))
        or "no scores"
    )


@dataclass(frozen=True)
class EvalRequest:
    """What an evaluation needs of a job's config: the ``eval`` node, the tasks, the model's trust flag."""

    eval_cfg: Any  # the ``eval`` config node (kit.core.schema.EvalConfig)
    tasks: list[str]
    limit: int | None = None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, cfg: DictConfig | EvalRequest) -> EvalRequest:
        if isinstance(cfg, EvalRequest):
            return cfg
        return cls(cfg.eval, list(cfg.tasks.specs), cfg.tasks.limit, bool(cfg.model.trust_remote_code))


def evaluate(
    request: EvalRequest | DictConfig, job_dir: Path, base: Path, checkpoint: Checkpoint, peers: list[Path] = ()
) -> EvalResult:
    """Evaluate ``checkpoint`` (and score ``base`` on the same samples); logs under ``<job>/inspect_logs``."""
    request = EvalRequest.of(request)
    threads.apply(threads.choose(os.environ))  # `kit eval` starts here without training first
    log_dir = Path(job_dir) / "inspect_logs"
    specs = request.tasks
    eval_cfg = request.eval_cfg
    ctx = EvalContext(
        checkpoint_kind=checkpoint.kind,
        checkpoint_path=checkpoint.path,
        base=base,
        tasks=specs,
        log_dir=log_dir,
        eval_cfg=eval_cfg,
        tmp_root=Path(eval_cfg.tmp_dir) if eval_cfg.tmp_dir else Path(job_dir),
        trust_remote_code=request.trust_remote_code,
        limit=request.limit,
        peers=list(peers),
    )
    if checkpoint.kind == "adapter" and eval_cfg.strategy != "none":  # every strategy, every command
        check_adapter(checkpoint.path, job_dir, base)
    with session_scope():  # the command's session, else one for this checkpoint, auto's probe and its base scores
        strategy, why, evidence = auto.resolve(ctx)
        ctx = replace(ctx, strategy=strategy)
        shown = shown_name(strategy, eval_cfg)
        with timed(log, f"eval ({shown})") as t, DiskWatch(ctx.tmp_root, ignore=(ctx.log_dir,)) as disk:
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
        if eval_cfg.base_scores and strategy != "none":
            with timed(log, "base scores") as t:
                with resume_scope(base_subject(base, strategy)):
                    base_result = base_scores(ctx)
                t["detail"] = score_line(base_result["scores"]) + (" (cached)" if base_result.get("cached") else "")
            base_seconds = t["seconds"]
    info = {k: v for k, v in result.items() if k not in ("scores",)}
    info["strategy"] = shown if str(eval_cfg.strategy) == strategy else str(eval_cfg.strategy)
    info["strategy_chosen"], info["why"] = shown, why
    if evidence is not None:  # eval=auto: what it measured (per candidate: setup, batch and predicted seconds)
        info["auto"] = evidence
    info["base_scores_cached"] = base_result.get("cached")
    info["base_scores_key"] = base_result.get("key")  # $KIT_CACHE/base_scores/<key>/record.json: what was hashed
    info["base_scores_seconds"] = base_seconds
    # the base's Inspect logs, copied into this job (inspect_logs/base/): per-sample base scores for the paired tests
    info["base_logs"] = list(base_result.get("logs") or [])
    # what was evaluated, on what: W&B's eval run uses their artifacts (kit.core.wandb_artifacts)
    info["checkpoint"], info["base"] = checkpoint.to_json(), str(base)
    return EvalResult(
        scores=result["scores"],
        base_scores=base_result["scores"],
        info=info,
        temp_peak_bytes=int(result.get("temp_peak_bytes") or 0),
    )


def shown_name(strategy: str, eval_cfg) -> str:
    """The strategy as results name it: a run on kit's CPU stand-in is ``vllm-standin``, never ``vllm``."""
    return STANDIN if strategy == "vllm" and not real_vllm(eval_cfg) else strategy


def eval_entry(request: EvalRequest | DictConfig, evaluated: EvalResult, command: str) -> dict:
    """One evaluation of a checkpoint, as ``summary.json`` keeps it in ``evals`` (appended, never replaced)."""
    request = EvalRequest.of(request)
    settings = {k: request.eval_cfg[k] for k in ("batch_size", "max_tokens", "temperature", "seed", "device", "dtype")}
    return {
        "command": command,
        "when": time.time(),
        "strategy": evaluated.info.get("strategy") or str(request.eval_cfg.strategy),
        "tasks": list(request.tasks),
        "limit": request.limit,
        "settings": settings,
        "scores": evaluated.scores,
        "base_scores": evaluated.base_scores,
        "eval": evaluated.info,
        "temp_peak_bytes": evaluated.temp_peak_bytes,
    }
