"""Evaluate a checkpoint with the configured strategy, and score the base on the same tasks."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from kit.core.errors import KitError
from kit.stages.base_scores import base_scores
from kit.stages.eval import get_strategy
from kit.stages.eval.checks import check_adapter
from kit.stages.eval.context import EvalContext


def evaluate(cfg: DictConfig, job_dir: Path, base: Path, checkpoint: dict, peers: list[Path] = ()) -> dict:
    log_dir = job_dir / "inspect_logs"
    specs = list(cfg.tasks.specs)
    ctx = EvalContext(
        checkpoint_kind=checkpoint["kind"], checkpoint_path=Path(checkpoint["path"]), base=base,
        tasks=specs, log_dir=log_dir, eval_cfg=cfg.eval,
        tmp_root=Path(cfg.eval.tmp_dir) if cfg.eval.tmp_dir else job_dir,
        trust_remote_code=cfg.model.trust_remote_code, limit=cfg.tasks.limit, peers=list(peers),
    )
    if checkpoint["kind"] == "adapter" and cfg.eval.strategy != "none":  # every strategy, every command
        check_adapter(Path(checkpoint["path"]), job_dir, base)
    result = get_strategy(cfg.eval.strategy)(ctx)
    if cfg.eval.strategy != "none" and not result.get("scores"):
        raise KitError(f"the {cfg.eval.strategy} eval of {checkpoint['path']} returned no scores for tasks {specs}; "
                       "expected a score per task (the job is not marked done)")
    base_result = {"scores": {}}
    if cfg.eval.base_scores and cfg.eval.strategy != "none":
        base_result = base_scores(ctx)
    info = {k: v for k, v in result.items() if k not in ("scores",)}
    info["strategy"] = cfg.eval.strategy
    info["base_scores_cached"] = base_result.get("cached")
    return {
        "eval": info,
        "scores": result["scores"],
        "base_scores": base_result["scores"],
        "temp_peak_bytes": result.get("temp_peak_bytes", 0),
    }


def eval_entry(cfg: DictConfig, evaluated: dict, command: str) -> dict:
    """One evaluation of a checkpoint, as ``summary.json`` keeps it in ``evals`` (appended, never replaced)."""
    settings = {k: cfg.eval[k] for k in ("batch_size", "max_tokens", "temperature", "seed", "device", "dtype")}
    return {
        "command": command, "when": time.time(), "strategy": cfg.eval.strategy, "tasks": list(cfg.tasks.specs),
        "limit": cfg.tasks.limit, "settings": settings, "scores": evaluated["scores"],
        "base_scores": evaluated["base_scores"], "eval": evaluated["eval"],
        "temp_peak_bytes": evaluated["temp_peak_bytes"],
    }
