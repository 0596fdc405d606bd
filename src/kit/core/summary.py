"""``summary.json``, typed: what a job is, how it ended, and what each phase recorded.

Every writer builds or updates a ``Summary`` and every reader gets one back, so a key is named
once, here. Keys this version of kit does not know (written by a newer one, or by hand) are kept
in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Status:
    """The states of a job; ``done`` is the only one that is a result."""

    RUNNING = "running"
    DONE = "done"
    UNVERIFIED = "unverified"  # trained and scored, but verify failed: not a result (verify.required)
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # ended while running: killed, Ctrl-C, preempted
    UNREADABLE = "unreadable"  # summary.json is not a JSON object (truncated, garbled)

    FINISHED = (DONE,)  # never run again, never touched


@dataclass
class Summary:
    status: str
    job_dir: str
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    group: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    base_model: str | None = None
    started: float | None = None
    finished: float | None = None
    host: str | None = None
    versions: dict = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)  # the job's pipeline, in order (kit.job.phases)
    train: dict | None = None
    checkpoint: dict | None = None
    eval: dict | None = None
    scores: dict | None = None
    base_scores: dict | None = None
    evals: list[dict] = field(default_factory=list)  # every evaluation of the checkpoint, appended
    storage: dict | None = None
    timings: dict = field(default_factory=dict)
    verify: dict | None = None
    modifiers: dict | None = None
    compress: dict | None = None
    served: dict | None = None  # phase serve: requests sent to the job's modifiers through kit serve
    lifecycle: dict | None = None  # phase lifecycle: bytes and scores at every step, and their projection
    error: str | None = None
    traceback: str | None = None
    unreadable_before: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("status", Status.UNREADABLE)
        known.setdefault("job_dir", "")
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data = {k: v for k, v in data.items() if v is not None and v != [] and v != {}}
        return {**data, **self.extra}

    @property
    def is_done(self) -> bool:
        return self.status == Status.DONE

    def record(self, update: dict[str, Any], timings: dict[str, Any] | None = None) -> None:
        """Merge one phase's result: its keys replace the summary's, its timings join the others."""
        for key, value in update.items():
            if key == "timings":
                self.timings.update(value)
            elif hasattr(self, key) and key != "extra":
                setattr(self, key, value)
            else:
                self.extra[key] = value
        self.timings.update(timings or {})
