"""What an eval strategy gets: the checkpoint, the base, the tasks and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvalContext:
    checkpoint_kind: str  # "adapter" | "full"
    checkpoint_path: Path
    base: Path
    tasks: list[str]
    log_dir: Path
    eval_cfg: object  # the ``eval`` config node
    tmp_root: Path  # where temporary merged models may go
    trust_remote_code: bool = False
    limit: int | None = None
    peers: list[Path] = field(default_factory=list)  # every adapter of this eval call (one vLLM server for all)
    strategy: str | None = None  # the strategy that runs (eval=auto's choice); None: eval.strategy
