"""The interface every phase of a job implements, and what phases hand each other.

A job is an ordered list of phases (``phase.pipeline`` in the ``phase`` config group: training is
``[train, export, merge, evaluate, verify]``). Before anything runs, preflight calls every phase's
``check(cfg)``; then the job calls ``run(ctx)`` of each phase that ``applies(cfg)``, in order. A phase
reads what earlier ones produced from the context (``ctx.checkpoint``, ``ctx.base``) and leaves its
own there; what it reports goes to ``summary.json`` through ``ctx.record(...)`` (kit.core.record).
A new phase is one module in ``kit/job/phases/`` defining ``PHASE``, found by the registry there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kit.core.config import plain_config
from kit.core.identity import RunIdentity
from kit.core.jobdir import JobDir
from kit.core.record import record
from kit.core.results import Checkpoint, EvalResult
from kit.core.summary import Summary


@dataclass
class JobContext:
    cfg: DictConfig  # the job's composed, resolved config; phases pass on only the parts a stage uses
    job: JobDir
    base: Path  # the base the next phase builds on (a merge or a compression replaces it)
    identity: RunIdentity
    summary: Summary  # what has been recorded so far (written after every phase)
    trained: dict | None = None  # train's result (kit.train.run.train), epoch_dir included
    checkpoint: Checkpoint | None = None  # what the job stores so far
    evaluated: EvalResult | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # anything else a phase leaves for a later one

    @cached_property
    def plain(self) -> dict:
        """The resolved config as plain values, secrets redacted (what W&B records)."""
        return plain_config(self.cfg)

    def record(self, what: str, job_type: str | None = None, timing: str | None = None, announce: bool = True):
        """kit.core.record.record for this job: its summary, logger and identity."""
        return record(
            what,
            job=self.job,
            summary=self.summary,
            logger=self.cfg.logger,
            job_type=job_type,
            identity=self.identity,
            config=self.plain,
            timing=timing,
            announce=announce,
        )


class Phase:
    """One step of a job. Subclasses set ``name`` (the module's name, as ``phase.pipeline`` lists it)."""

    name: str = ""
    what: str = ""  # one line for docs and ``kit plugins``

    def applies(self, cfg: DictConfig) -> bool:
        """Whether this job runs the phase (merge only with ``phase.merge``, verify with ``verify.after_train``)."""
        return True

    def check(self, cfg: DictConfig, base: Path) -> None:
        """Everything the phase needs, checked before any job dir is written: a one-line KitError."""

    def run(self, ctx: JobContext) -> None:
        raise NotImplementedError
