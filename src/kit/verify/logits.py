"""Check 1: logits on the probe set, every eval path against the fp32 reference
(PEFT ``merge_and_unload`` in fp32); limits per dtype in kit/verify/tolerance.py."""

from __future__ import annotations

from kit.verify.check import VerifyCheck
from kit.verify.context import REFERENCE, VerifyContext
from kit.verify.tolerance import compare_logits, limit_note


def check(ctx: VerifyContext) -> dict:
    ref = ctx.logits(REFERENCE)
    rounding = None if ctx.tol.strict else ctx.rounding()
    figures = {name: compare_logits(ref, ctx.logits(name), ctx.tol, rounding) for name in ctx.eval_paths()}
    failed = [n for n, f in figures.items() if not f["passed"]]
    worst = max(f["max_abs_diff"] for f in figures.values())
    return {
        "passed": not failed,
        "figures": {
            "reference": f"{REFERENCE}: PEFT merge_and_unload in fp32",
            "probes": len(ref),
            **({} if rounding is None else {"rounding_yardstick": rounding}),
            "paths": figures,
        },
        "tolerance": ctx.tol.describe(),
        "detail": (
            "; ".join(why(n, figures[n], ctx) for n in failed)
            if failed
            else f"{len(figures)} {ctx.dtype} paths agree with the fp32 {REFERENCE}; worst max|diff| {worst:.2e}"
        ),
    }


def why(name: str, f: dict, ctx: VerifyContext) -> str:

    return (
        f"{name} vs fp32 {REFERENCE}: max|logit diff| {f['max_abs_diff']:.3g}{limit_note(f, ctx.tol)}, "
        f"top-1 agreement {f['top1_agreement']:.3f} of {f['positions']} positions"
    )


CHECK = VerifyCheck(
    "logits",
    check,
    "probe-set logits: every eval path (exported full model, PEFT merge, in-memory merge, direct) against an fp32 reference",
)
