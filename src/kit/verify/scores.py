"""Check 3: Inspect scores per strategy, several tasks in one ``eval()`` call.

Each strategy of ``verify.strategies`` evaluates the adapter through kit's real
strategy code (kit/eval/), and a full checkpoint is evaluated as Inspect's ``hf``
model too; scores per task and each sample's completion must equal the first
strategy's (completions are compared in fp32 only; see kit/verify/generation.py).
Logs go to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from kit.eval.context import EvalContext
from kit.eval.strategies import get_strategy
from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext

SECOND_TASK = "kit/parity_long"  # so that state carried across tasks in one run would show


def tasks(ctx: VerifyContext) -> list[str]:
    specs = list(ctx.cfg.verify.tasks or ctx.cfg.tasks.specs or ["kit/parity"])
    return specs if len(specs) > 1 else [*specs, SECOND_TASK]


def check(ctx: VerifyContext) -> dict:
    specs = tasks(ctx)
    tmp = Path(tempfile.mkdtemp(prefix="kit-verify-"))
    try:
        runs = {name: run(ctx, name, kind, path, specs, tmp) for name, kind, path in plans(ctx)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = next(iter(runs))
    ref = runs[first]
    failed = []
    for name, r in runs.items():
        if r["scores"] != ref["scores"]:
            failed.append(f"{name}: scores {r['scores']} != {first} {ref['scores']}")
        differ = sum(ref["completions"].get(k) != v for k, v in r["completions"].items())
        r["completions_differing"] = differ
        if differ and ctx.tol.strict:
            failed.append(f"{name}: {differ} of {len(r['completions'])} completions differ from {first}")
    return {
        "passed": not failed,
        "figures": {
            "tasks": specs,
            "limit": int(ctx.cfg.verify.limit),
            "strategies": {
                n: {"scores": r["scores"], "completions_differing": r["completions_differing"], "seconds": round(r["seconds"], 2)}
                for n, r in runs.items()
            },
        },
        "tolerance": {"scores": "identical", "completions": "identical" if ctx.tol.strict else "reported"},
        "detail": "; ".join(failed) if failed else f"{len(runs)} strategies score {ref['scores']} on {len(specs)} tasks",
    }


def plans(ctx: VerifyContext) -> list[tuple[str, str, Path]]:
    out = [(s, "adapter", ctx.adapter) for s in ctx.cfg.verify.strategies]
    if ctx.full:
        out.append(("full_model", "full", ctx.full))
    return out


def run(ctx: VerifyContext, name: str, kind: str, path: Path, specs: list[str], tmp: Path) -> dict:

    eval_cfg = copy.deepcopy(ctx.cfg.eval)
    eval_cfg.dtype, eval_cfg.device, eval_cfg.temperature = ctx.dtype, ctx.device, 0.0
    # Inspect's hf provider waits 2 s for more requests unless a batch is full; a batch of
    # ``limit`` fills at once (tasks run one after another), which keeps this check cheap
    eval_cfg.batch_size = int(ctx.cfg.verify.limit)
    strategy = name if kind == "adapter" else "merge"  # a full model is a plain hf model on every strategy
    ectx = EvalContext(
        checkpoint_kind=kind,
        checkpoint_path=path,
        base=ctx.base,
        tasks=specs,
        log_dir=tmp / name,
        eval_cfg=eval_cfg,
        tmp_root=tmp,
        trust_remote_code=bool(ctx.cfg.model.trust_remote_code),
        limit=int(ctx.cfg.verify.limit),
        peers=list(ctx.peers),
    )
    result = get_strategy(strategy)(ectx)
    return {"scores": result["scores"], "completions": completions(result["logs"]), "seconds": result["seconds"]}


def completions(log_files: list[str]) -> dict:
    """Each sample's completion, keyed by task/sample id."""
    from inspect_ai.log import read_eval_log

    out = {}
    for path in log_files:
        log = read_eval_log(path)
        for sample in log.samples:
            out[f"{log.eval.task}/{sample.id}"] = sample.output.completion
    return out


CHECK = VerifyCheck(
    "inspect", check, "Inspect scores and completions per strategy, two or more tasks in one run", needs_inspect=True
)
