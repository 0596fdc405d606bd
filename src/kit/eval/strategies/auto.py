"""``eval=auto`` (the default): the strategy that gives the merged model's answers fastest, as
measured on this machine for this base, dtype and adapter shape (kit.eval.auto_probe), recorded
with the figures in ``summary.json`` (``eval.strategy_chosen``, ``eval.why``, ``eval.auto``).

- a full checkpoint is already merged: ``merge`` (evaluates the folder, nothing merged);
- an adapter: ``direct`` or ``merge_in_memory``, whichever has the smaller predicted time for
  this eval's samples among those that generate the merged model's tokens on the probe samples
  (measured once per base content, device, dtype and adapter shape, then cached). ``merge``
  (never faster than ``merge_in_memory``) and ``vllm`` (a server of its own, not measured
  here) are used only when named.
"""

from __future__ import annotations

from dataclasses import replace

from kit.core.device import resolve_device, resolve_dtype
from kit.eval import auto_probe
from kit.eval.context import EvalContext
from kit.eval.session import session_scope
from kit.eval.strategies import get_strategy
from kit.eval.strategy import Strategy


def choose(ctx: EvalContext) -> tuple[str, str, dict | None]:
    """(strategy, why, the measured evidence) for this checkpoint on this machine."""
    if ctx.checkpoint_kind == "full":
        return "merge", "full checkpoint: already merged, evaluated as a plain hf model", None
    cfg = ctx.eval_cfg
    device = resolve_device(cfg.device)
    with session_scope() as session:  # the eval's own resident base: measuring loads nothing more
        resident = session.resident(
            ctx.base, device, resolve_dtype(cfg.dtype, device), bool(ctx.trust_remote_code), int(cfg.max_adapters)
        )
        record = auto_probe.measured(ctx, resident)
    _, samples = auto_probe.task_samples(list(ctx.tasks), ctx.limit)
    return auto_probe.decide(record, samples)


def resolve(ctx: EvalContext) -> tuple[str, str, dict | None]:
    """(strategy, why, evidence) for any ``eval.strategy``: ``auto`` measures, the others are as set."""
    name = str(ctx.eval_cfg.strategy)
    return choose(ctx) if name == "auto" else (name, f"set by eval={name}", None)


def evaluate(ctx: EvalContext) -> dict:
    strategy, why, evidence = choose(ctx)
    result = get_strategy(strategy)(replace(ctx, strategy=strategy))
    return {**result, "strategy_chosen": strategy, "why": why, "auto": evidence}


STRATEGY = Strategy(
    "auto", evaluate, "the fastest strategy that gives the merged model's answers, measured on this machine (summary.json)"
)
