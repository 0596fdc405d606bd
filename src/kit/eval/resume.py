"""Evals that resume: a rerun after an interruption (Ctrl-C, a kill, a SLURM requeue) reuses the
samples an earlier attempt already scored, through Inspect's own sample reuse (the mechanism its
``eval_retry`` and ``eval_set`` use: a previous log handed to ``eval`` as a ``PreviousTask``, whose
clean samples are copied by (sample id, epoch) instead of generated again).

Which earlier log may be reused is kit's decision, not Inspect's: Inspect pairs a log with a task
by model name and arguments, and those name paths (``peft/<job>/adapter``, a temporary merged
folder), not contents. kit writes an identity into every log it starts (the eval's ``metadata``)
and reuses only an unfinished log (started, cancelled, error) whose identity is equal. The
identity hashes what makes the samples what they are:

- the subject: the checkpoint's content (an adapter's content hash; a full model's file names,
  sizes and modification times; the base's the same way) and the strategy that runs it;
- the task spec (and a task file's bytes), ``tasks.limit``;
- the generation settings: batch size, samples in flight, max tokens, temperature, seed, the
  resolved device and dtype (and the vLLM server settings for ``eval=vllm``);
- the versions of the pinned stack.

A retrained adapter with other bytes, another rank, another strategy or another setting has another
identity: its samples are never mixed with these. Logs are looked for in the eval's log folder and
in the same folder of every earlier attempt of the job (``<job>/attempts/<n>/``, where a rerun
moves an unfinished attempt's files). Evals run outside a ``resume_scope`` (verify's re-evaluations,
Inspect's own CLI) write no identity and never resume.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.identity import adapter_hash, file_sha256, files_stat
from kit.core.jobdir import JobDir
from kit.core.versions import stack_versions

IDENTITY = "kit_eval_identity"  # key of the eval log's metadata
SUBJECT = "kit_eval_subject"
UNFINISHED = ("started", "cancelled", "error")  # a success is a result, never resumed into another

_subject: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kit_eval_subject", default=None)


@contextmanager
def resume_scope(subject: dict | None):
    """Evals inside this block write ``subject``'s identity into their logs and resume from an
    earlier unfinished log of the same identity."""
    token = _subject.set(subject)
    try:
        yield
    finally:
        _subject.reset(token)


def checkpoint_subject(kind: str, path: Path, content_hash: str | None, strategy: str) -> dict:
    if kind == "adapter":
        return {"kind": "adapter", "content_hash": content_hash or adapter_hash(path), "strategy": strategy}
    return {"kind": kind, "files": files_stat(path), "strategy": strategy}


def base_subject(base: Path, strategy: str) -> dict:
    return {"kind": "base", "files": files_stat(base), "strategy": strategy}


def settings(eval_cfg, strategy: str) -> dict:
    device = resolve_device(eval_cfg.device)
    out = {
        "batch_size": int(eval_cfg.batch_size),
        "max_connections": eval_cfg.get("max_connections"),
        "max_tokens": int(eval_cfg.max_tokens),
        "temperature": float(eval_cfg.temperature),
        "seed": int(eval_cfg.seed),
        "device": device,
        "dtype": resolve_dtype(eval_cfg.dtype, device),
    }
    if strategy == "vllm":
        from omegaconf import OmegaConf

        out["vllm"] = OmegaConf.to_container(eval_cfg.vllm, resolve=True, enum_to_str=True)
    return out


def task_part(spec: str) -> dict:
    path = Path(spec.split("@")[0])
    return {"spec": spec, "file_sha256": file_sha256(path) if path.suffix == ".py" and path.is_file() else None}


def identity(subject: dict, spec: str, limit, eval_cfg) -> str:
    parts = {
        "subject": subject,
        "task": task_part(spec),
        "limit": limit,
        "settings": settings(eval_cfg, subject.get("strategy", "")),
        "versions": stack_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def log_dirs(log_dir: Path) -> list[Path]:
    """The eval's log folder, then the same folder of each earlier attempt of the job."""
    log_dir = Path(log_dir)
    attempts = sorted(
        (p for p in (log_dir.parent / JobDir.ATTEMPTS).glob("*") if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
    )
    return [log_dir, *(p / log_dir.name for p in attempts)]


def candidates(log_dir: Path, ident: str):
    """(path, samples it holds) of every unfinished log of this identity."""
    from inspect_ai.log import read_eval_log, read_eval_log_sample_summaries

    for folder in log_dirs(log_dir):
        for path in sorted(folder.glob("*.eval")) if folder.is_dir() else []:
            try:
                header = read_eval_log(str(path), header_only=True)
                if header.status not in UNFINISHED or (header.eval.metadata or {}).get(IDENTITY) != ident:
                    continue
                clean = [s for s in read_eval_log_sample_summaries(str(path)) if s.completed and not s.error]
            except Exception:  # unreadable (cut mid-write): nothing to reuse from it
                continue
            if clean:
                yield path, len(clean)


def find_resumable(log_dir: Path, ident: str) -> Path | None:
    """The unfinished log of this identity that holds the most clean samples (None: there is none)."""
    best = max(candidates(log_dir, ident), key=lambda c: c[1], default=None)
    return best[0] if best else None


@dataclass
class Plan:
    """How one task of an eval runs: its identity (None: outside a resume scope) and the earlier log
    whose samples it reuses (None: all samples are scored)."""

    spec: str
    identity: str | None
    previous: Path | None = None
    subject: dict | None = None

    def metadata(self) -> dict | None:
        return {IDENTITY: self.identity, SUBJECT: self.subject} if self.identity else None

    def task(self, given: str | None = None):
        """What to hand to Inspect's ``eval``: the spec (as ``given``, default ``self.spec``), or a
        ``PreviousTask`` carrying the earlier log."""
        given = given or self.spec
        if self.previous is None:
            return given
        from inspect_ai._eval.task import PreviousTask  # Inspect's eval_retry builds the same
        from inspect_ai.log import read_eval_log

        log = read_eval_log(str(self.previous))
        return PreviousTask(
            id=log.eval.task_id,
            task=given,
            task_args=dict(log.eval.task_args_passed or {}),
            model=None,
            model_roles=None,
            sandbox=None,
            log=log,
            log_info=None,
        )


def plan(spec: str, log_dir: Path, eval_cfg, limit) -> Plan:
    subject = _subject.get()
    if subject is None:
        return Plan(spec, None)
    ident = identity(subject, spec, limit, eval_cfg)
    resumable = find_resumable(log_dir, ident) if eval_cfg.get("resume", True) else None
    return Plan(spec, ident, resumable, subject)


def reused(plan: Plan, log) -> dict | None:
    """What a resumed eval took from the earlier log: its path, and how many of the new log's
    samples are the earlier log's (same sample uuid) and how many were scored now."""
    if plan.previous is None:
        return None
    from inspect_ai.log import read_eval_log_sample_summaries

    before = {s.uuid for s in read_eval_log_sample_summaries(str(plan.previous)) if s.uuid}
    now = [s.uuid for s in log.samples or []]
    taken = sum(u in before for u in now)
    return {"task": plan.spec, "from": str(plan.previous), "reused_samples": taken, "scored_samples": len(now) - taken}
