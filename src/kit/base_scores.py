"""Scores of the untrained base on the same tasks, cached per base model.

The cache key covers what changes the number: the base folder's identity
(path, weight file names, sizes and mtimes), the task specs and the generation
settings. Every job of a sweep reuses one evaluation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kit.tiny import cache_root


def cache_key(base: Path, tasks: list[str], eval_cfg, limit) -> str:
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in base.glob("*.safetensors"))
    ident = {
        "base": str(base), "files": files, "tasks": list(tasks), "limit": limit,
        "gen": [eval_cfg.max_tokens, eval_cfg.temperature, eval_cfg.seed],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def base_scores(base: Path, tasks: list[str], eval_cfg, log_dir: Path, limit=None, trust_remote_code=False) -> dict:
    path = cache_root() / "base_scores" / f"{cache_key(base, tasks, eval_cfg, limit)}.json"
    if path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    from kit.eval.context import EvalContext
    from kit.eval.merge import evaluate_folder

    ctx = EvalContext("full", base, base, tasks, log_dir, eval_cfg, log_dir, trust_remote_code, limit)
    result = evaluate_folder(ctx, base, "kit-base")
    record = {"scores": result["scores"], "logs": result["logs"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(record)}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)  # atomic: parallel sweep jobs never read half a file
    return {**record, "cached": False}
