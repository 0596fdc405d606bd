"""``eval=auto`` (the default): the fastest strategy that gives the same answers, for
this machine and this eval, recorded with the reason in ``summary.json``
(``eval.strategy_chosen``, ``eval.why``).

- a full checkpoint is already merged: ``merge`` (evaluates the folder, nothing merged);
- vLLM installed, a GPU, and every LoRA target servable: ``vllm`` (its LoRA kernels
  keep base speed, one server for every adapter);
- a GPU: ``merge_in_memory`` (an eval runs one adapter at a time, so merging it into
  the resident base gives base speed; restore is a device copy plus a checksum);
- CPU: ``direct`` (no merge arithmetic and no second copy of the touched weights in
  host memory; the unmerged LoRA costs r*(in+out) of in*out per layer, a few %).
"""

from __future__ import annotations

import json
from dataclasses import replace

from kit.core.device import resolve_device
from kit.eval.context import EvalContext
from kit.eval.strategies import get_strategy
from kit.eval.strategy import Strategy
from kit.eval.vllm_lora import unservable_modules, vllm_installed


def choose(ctx: EvalContext) -> tuple[str, str]:
    """(strategy, why) for this checkpoint on this machine."""
    if ctx.checkpoint_kind == "full":
        return "merge", "full checkpoint: already merged, evaluated as a plain hf model"
    device = resolve_device(ctx.eval_cfg.device)
    if not device.startswith("cuda"):
        return "direct", (
            f"device {device}: unmerged adapter on the resident base, no merge arithmetic and "
            "no snapshot copy of the touched weights"
        )
    note = ""
    if vllm_installed():
        bad = unservable_modules(adapter_targets(ctx))
        if not bad:
            return "vllm", "vLLM installed and serves every LoRA target: base speed, one server for every adapter"
        note = f"vLLM does not serve LoRA on {bad[0]!r}; "
    return "merge_in_memory", (
        f"{note}device {device}: one adapter per eval, merged into the resident base "
        "(base speed), restored by a device copy checked by checksum"
    )


def adapter_targets(ctx: EvalContext):
    try:
        return json.loads((ctx.checkpoint_path / "adapter_config.json").read_text()).get("target_modules")
    except (OSError, ValueError):
        return None  # a broken adapter fails in the chosen strategy, with its own one-line error


def resolve(ctx: EvalContext) -> tuple[str, str]:
    """(strategy, why) for any ``eval.strategy``: ``auto`` chooses, the others are as set."""
    name = str(ctx.eval_cfg.strategy)
    return choose(ctx) if name == "auto" else (name, f"set by eval={name}")


def evaluate(ctx: EvalContext) -> dict:
    strategy, why = choose(ctx)
    result = get_strategy(strategy)(replace(ctx, strategy=strategy))
    return {**result, "strategy_chosen": strategy, "why": why}


STRATEGY = Strategy("auto", evaluate, "the fastest of the others for this machine and checkpoint (recorded in summary.json)")
