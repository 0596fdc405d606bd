"""Scores of the untrained base on the same tasks, cached by what decides them.

The cache key (kit.eval.score_key) covers the content of everything that can change the
number: the base's files, the tasks' source and samples, the scoring settings, the stack's
versions and kit's own scoring code. An entry is a folder, ``$KIT_CACHE/base_scores/<key>/``,
holding ``record.json`` (scores, and the identity that was hashed) and the base's Inspect
logs. Every job gets those logs copied into its own ``inspect_logs/base/``, so the paired
"vs base" test of a sweep reads them from the job, never from another job's dir; an entry
whose logs are gone is scored again. Strategies that keep a resident base (direct,
merge_in_memory) score it through that same copy (``peft/base``), so the base is never
loaded a second time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from kit.core.folders import build_atomically, cache_root
from kit.eval.score_key import score_identity, score_key
from kit.eval.strategies.direct import evaluate_with_peft
from kit.eval.strategies.merge import evaluate_folder

RECORD = "record.json"
BASE_LOGS = "base"  # the job's copy: <job>/inspect_logs/base/


def scorer(ctx) -> str:
    """Which model path scores the base: the resident copy, or a plain hf folder."""
    from kit.eval.strategies import get_strategy  # the registry imports the strategies, which import this

    return "peft/base" if get_strategy(ctx.strategy or ctx.eval_cfg.strategy).resident else "hf"


def entry_dir(ctx) -> tuple[Path, dict]:
    identity = score_identity(ctx, scorer(ctx))
    return cache_root() / "base_scores" / score_key(identity), identity


def score_base(ctx) -> dict:
    if scorer(ctx) == "peft/base":
        return evaluate_with_peft(replace(ctx, checkpoint_kind="adapter", checkpoint_path=Path("base")), merge=False)
    return evaluate_folder(replace(ctx, checkpoint_kind="full", checkpoint_path=ctx.base), ctx.base, "kit-base")


def base_scores(ctx) -> dict:
    """The base's scores and its logs in the job (``logs``): from the cache when it holds a
    readable entry with its logs, else computed. The cache never fails a job: a damaged entry
    is recomputed and replaced, a failed write (full disk, read-only cache) is skipped with one
    warning line."""
    entry, identity = entry_dir(ctx)
    job_logs = Path(ctx.log_dir) / BASE_LOGS
    cached = read_cached(entry)
    if cached is not None:
        try:
            logs = copy_logs(entry, cached["logs"], job_logs)
            return {"scores": cached["scores"], "logs": logs, "cached": True, "key": entry.name}
        except OSError as e:
            warn(
                f"base-score cache {entry}: its logs could not be copied into the job ({e.strerror or e}); scoring the base again"
            )
    result = score_base(replace(ctx, log_dir=job_logs))
    record = {"scores": result["scores"], "logs": [Path(p).name for p in result["logs"]], "identity": identity}
    write_cached(entry, record, [Path(p) for p in result["logs"]])
    return {"scores": result["scores"], "logs": list(result["logs"]), "cached": False, "key": entry.name}


def copy_logs(entry: Path, names: list[str], dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        shutil.copy2(entry / name, dest / name)
        out.append(str(dest / name))
    return out


def read_cached(entry: Path) -> dict | None:
    path = entry / RECORD
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
    logs = record.get("logs")
    if not isinstance(logs, list) or not logs or not all(isinstance(n, str) and (entry / n).is_file() for n in logs):
        warn(f"base-score cache {entry} has lost its Inspect logs (the paired tests need them); scoring the base again")
        return None
    return record


def write_cached(entry: Path, record: dict, logs: list[Path]) -> None:
    """Publish the entry whole or not at all (parallel sweep jobs never read half of one)."""

    def build(scratch: Path) -> None:
        for log in logs:
            shutil.copy2(log, scratch / log.name)
        (scratch / RECORD).write_text(json.dumps(record, indent=2))

    try:
        if entry.exists():  # a damaged entry: renamed aside first, so no reader sees half of one
            aside = entry.with_name(f".damaged-{entry.name}-{os.getpid()}")
            entry.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        build_atomically(entry, build, prefix=".base-scores-")
    except OSError as e:
        warn(f"base-score cache {entry} not written ({e.strerror or e}); the scores are in the job's summary")


def warn(message: str) -> None:
    print(f"kit: warning: {message}", file=sys.stderr)
