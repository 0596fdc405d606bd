"""The typed results the stages hand each other; ``summary.json`` holds their JSON form.

``Checkpoint``: what a job stored (export, merge) and every later command reads back from its job
dir. ``EvalResult``: what one evaluation of a checkpoint measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("adapter", "full", "modifiers")


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # adapter (PEFT folder) | full (HF model folder) | modifiers (a registry, modifiers.json)
    path: Path
    bytes: int
    merged_from: str | None = None  # phase.merge: the kind it was before the merge
    content_hash: str | None = None  # adapters: sha256 of the folder (kit.core.identity.adapter_hash)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"checkpoint kind {self.kind!r}; expected one of {KINDS}")
        object.__setattr__(self, "path", Path(self.path))

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind, "path": str(self.path), "bytes": self.bytes}
        data.update({k: v for k in ("merged_from", "content_hash") if (v := getattr(self, k)) is not None})
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> Checkpoint:
        return dataclasses.replace(self, **changes)


@dataclass
class EvalResult:
    scores: dict[str, dict[str, float]]  # {task: {metric: value}}
    base_scores: dict[str, dict[str, float]]  # the untrained base on the same samples
    info: dict[str, Any] = field(default_factory=dict)  # strategy, chosen and why, logs, seconds, ...
    temp_peak_bytes: int = 0  # measured temporary disk (kit.core.diskwatch)

    @property
    def seconds(self) -> float:
        return float(self.info.get("seconds") or 0.0)
