"""Scores of the untrained base on the same tasks, cached per base model.

The cache key covers what changes the number: the base folder's identity
(path, weight file names, sizes and mtimes), the task specs and the generation
settings. Every job of a sweep reuses one evaluation. Strategies that keep a
resident base (direct, merge_in_memory) score it through that same copy
(``peft/base``), so the base is never loaded a second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.folders import cache_root
from kit.eval.strategies.direct import evaluate_with_peft
from kit.eval.strategies.merge import evaluate_folder


def resolved_dtype(eval_cfg) -> str:

    return resolve_dtype(eval_cfg.dtype, resolve_device(eval_cfg.device))


def cache_key(base: Path, tasks: list[str], eval_cfg, limit) -> str:
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in base.glob("*.safetensors"))
    ident = {
        "base": str(base),
        "files": files,
        "tasks": list(tasks),
        "limit": limit,
        "gen": [eval_cfg.max_tokens, eval_cfg.temperature, eval_cfg.seed, resolved_dtype(eval_cfg)],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def score_base(ctx) -> dict:
    from dataclasses import replace

    from kit.eval.strategies import get_strategy  # the registry imports the strategies, which import this

    if get_strategy(ctx.strategy or ctx.eval_cfg.strategy).resident:
        return evaluate_with_peft(replace(ctx, checkpoint_kind="adapter", checkpoint_path=Path("base")), merge=False)
    return evaluate_folder(replace(ctx, checkpoint_kind="full", checkpoint_path=ctx.base), ctx.base, "kit-base")


def base_scores(ctx) -> dict:
    """The base's scores: from the cache when it holds a readable record, else computed. The
    cache never fails a job: a damaged file is recomputed and replaced, a failed write (full
    disk, read-only cache) is skipped with one warning line."""
    path = cache_root() / "base_scores" / f"{cache_key(ctx.base, ctx.tasks, ctx.eval_cfg, ctx.limit)}.json"
    cached = read_cached(path)
    if cached is not None:
        return {**cached, "cached": True}
    result = score_base(ctx)
    record = {"scores": result["scores"], "logs": result["logs"]}
    write_cached(path, record)
    return {**record, "cached": False}


def read_cached(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        warn(f"base-score cache {path} unreadable ({type(e).__name__}); scoring the base again")
        return None
    if not isinstance(record, dict) or not isinstance(record.get("scores"), dict) or not record["scores"]:
        warn(f"base-score cache {path} holds no scores; scoring the base again")
        return None
    return record


def write_cached(path: Path, record: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)  # atomic: parallel sweep jobs never read half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)
        warn(f"base-score cache {path} not written ({e.strerror or e}); the scores are in the job's summary")


def warn(message: str) -> None:
    print(f"kit: warning: {message}", file=sys.stderr)
