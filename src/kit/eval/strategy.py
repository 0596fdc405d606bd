"""What an eval strategy is, as the registry in ``kit.eval.strategies`` lists it.

Each strategy module defines ``STRATEGY = Strategy(...)``: its name (``eval=<name>``), the function
that evaluates a checkpoint, what it needs installed, whether it keeps a resident base (the base's
own scores then come through that same copy) and what it refuses before any training is paid for.
A new strategy is its module, ``conf/eval/<name>.yaml`` and its value in ``kit.core.schema.Strategy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kit.core.versions import installed


@dataclass(frozen=True)
class Strategy:
    name: str
    evaluate: Callable[..., dict]  # evaluate(ctx: EvalContext) -> {"scores", "logs", "seconds", ...}
    what: str  # one line for ``kit plugins`` and the docs
    needs: tuple[str, ...] = ("inspect_ai", "peft")  # modules it imports
    needs_cuda: bool = False
    resident: bool = False  # evaluates on a resident base (kit.lora.resident), shared with the base scores
    refuse: Callable[..., str | None] | None = None  # refuse(cfg, base) -> why it cannot evaluate this LoRA

    def __call__(self, ctx) -> dict:
        return self.evaluate(ctx)

    def missing(self) -> list[str]:
        """What this machine lacks to run the strategy (empty: it can run)."""
        out = [f"{m} not installed" for m in self.needs if not installed(m)]
        if self.needs_cuda:
            import torch

            if not torch.cuda.is_available():
                out.append("no CUDA device")
        return out

    def refuse_before_training(self, cfg, base: Path) -> None:
        """A one-line KitError when this strategy would refuse the job's LoRA after training."""
        from kit.core.errors import KitError

        why = self.refuse(cfg, base) if self.refuse is not None else None
        if why:
            raise KitError(why)
