"""``eval=direct``: the base plus the unmerged adapter, through kit's ``peft/``
Inspect provider. The base is loaded once per session (the command's) and reused
by every task and every adapter; nothing is written to disk."""

from __future__ import annotations

import time

from kit.eval.context import EvalContext
from kit.eval.inspect_runner import max_connections, run_inspect
from kit.eval.session import session_scope
from kit.eval.strategies.merge import evaluate_folder
from kit.eval.strategy import Strategy
from kit.lora.probes import probe_resident


def peft_model(ctx: EvalContext, merge: bool):
    from inspect_ai.model import GenerateConfig, get_model

    cfg = ctx.eval_cfg
    return get_model(
        f"peft/{ctx.checkpoint_path}",
        memoize=False,
        config=GenerateConfig(max_connections=max_connections(cfg)),
        base=str(ctx.base),
        batch_size=int(cfg.batch_size),
        device=cfg.device,
        dtype=cfg.dtype,
        merge=merge,
        check_restore=bool(cfg.check_restore),
        max_adapters=int(cfg.max_adapters),
        do_sample=float(cfg.temperature) > 0,
        trust_remote_code=ctx.trust_remote_code,
    )


def evaluate_with_peft(ctx: EvalContext, merge: bool) -> dict:
    if ctx.checkpoint_kind == "full":
        return {**evaluate_folder(ctx, ctx.checkpoint_path, "kit-full"), "temp_peak_bytes": 0}
    with session_scope() as session:
        start = time.perf_counter()
        model = peft_model(ctx, merge)
        setup = time.perf_counter() - start
        extra = {}
        try:
            view = model.api.model
            if view.adapter is not None:  # an adapter, not the bare base: it must change the output
                extra["adapter_logit_change"] = probe_resident(view.resident, view.adapter, ctx.checkpoint_path, merge)
            result = run_inspect(model, ctx.tasks, ctx.log_dir, ctx.eval_cfg, ctx.limit)
        finally:
            model.api.close()  # restores the base after an in-memory merge
        resident = model.api.model.resident
        if merge:
            extra["snapshot"] = resident.snapshot_info()
        return {
            **result,
            **extra,
            "temp_peak_bytes": 0,
            "setup_seconds": setup,
            "adapter_loads": resident.adapter_loads,
            "adapter_loads_reusing_modules": resident.reused,
            "base_loads_in_process": session.base_loads,
        }  # this command's session: one process


def evaluate(ctx: EvalContext) -> dict:
    return evaluate_with_peft(ctx, merge=False)


STRATEGY = Strategy("direct", evaluate, "unmerged PEFT through the peft/ provider", resident=True)
