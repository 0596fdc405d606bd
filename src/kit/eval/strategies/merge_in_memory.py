"""``eval=merge_in_memory``: merge the adapter into the resident base's weights,
evaluate at merged-model speed, then copy the pristine weights back.

The touched layers are snapshotted once before the first merge; after each
adapter the base is restored from it bit for bit and its fingerprint checked
(``eval.check_restore``). No temporary disk at all."""

from __future__ import annotations

from kit.eval.context import EvalContext
from kit.eval.strategies.direct import evaluate_with_peft
from kit.eval.strategy import Strategy


def evaluate(ctx: EvalContext) -> dict:
    return evaluate_with_peft(ctx, merge=True)


STRATEGY = Strategy("merge_in_memory", evaluate, "merge into the resident base, restore it after", resident=True)
