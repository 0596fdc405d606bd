"""One shape for every phase of every command: its W&B run, its progress line and timing, and what
it adds to ``summary.json``.

    with record("train", job=job, summary=summary, logger=cfg.logger, job_type="train",
                identity=identity, config=plain) as rec:
        rec.update["train"] = train(...)          # keys for summary.json
        rec.detail = "248 steps, loss 6.2 -> 0.03"  # shown on the progress line

The block's seconds go to ``summary.timings[<timing>]``. With ``summary`` (the pipeline, which
holds the job's lock and its summary in memory) the summary is updated and written; without it
(``kit eval``, ``kit verify`` on a finished job) the summary on disk is read, updated and written
under its lock. A block that raises records nothing: the caller decides what a failure records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from kit.core.identity import RunIdentity
from kit.core.jobdir import JobDir
from kit.core.log import get as get_logger
from kit.core.log import timed
from kit.core.summary import Summary
from kit.core.wandb_logger import phase_run

log = get_logger(__name__)


@dataclass
class Recorder:
    run: Any = None  # the phase's W&B run (None: logger=none, or a phase without a run)
    update: dict[str, Any] = field(default_factory=dict)  # top-level keys for summary.json
    timings: dict[str, float] = field(default_factory=dict)  # more timings than the block's own
    change: Callable[[Summary], None] | None = None  # an edit beyond replacing keys (appending an eval)
    detail: str | None = None  # the progress line's ": <detail>"
    seconds: float = 0.0  # the block's time, once it has ended


@contextmanager
def stopwatch() -> Iterator[dict]:
    """``timed`` without its progress lines."""
    info: dict = {}
    start = time.perf_counter()
    yield info
    info["seconds"] = time.perf_counter() - start


@contextmanager
def record(
    what: str,
    *,
    job: JobDir | None = None,
    summary: Summary | None = None,
    logger=None,
    job_type: str | None = None,
    identity: RunIdentity | None = None,
    config: dict | None = None,
    timing: str | None = None,
    announce: bool = True,
    keep: bool = True,
) -> Iterator[Recorder]:
    """``what`` is the progress line (``kit: train ... / train done in 5.1 s: ...``; ``announce=False``
    when the work prints its own); ``job_type`` opens a W&B run (train / eval / verify) when a logger
    is configured; ``timing`` names the summary's timing key (default ``<what>_s`` for a one-word ``what``);
    ``keep=False``: nothing goes to a summary (a part of a job, such as one modifier, with its own W&B runs)."""
    opened = (
        phase_run(logger, job.path, job_type, identity.group, identity.name, config or {}, identity.run_id)
        if job_type and logger is not None and job is not None and identity is not None
        else nullcontext(None)
    )
    with opened as run, timed(log, what) if announce else stopwatch() as t:
        rec = Recorder(run=run)
        yield rec
        t["detail"] = rec.detail
    rec.seconds = t["seconds"]
    key = timing or (f"{what}_s" if what.isidentifier() else None)
    timings = {**({key: rec.seconds} if key else {}), **rec.timings}
    if job is None or not keep or not (rec.update or timings or rec.change):
        return

    def apply(s: Summary) -> None:
        s.record(rec.update, timings)
        if rec.change is not None:
            rec.change(s)

    if summary is not None:
        apply(summary)
        job.write(summary)
    else:
        job.update(apply)
