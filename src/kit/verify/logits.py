"""Check 1: logits on the probe set, every path against PEFT ``merge_and_unload``."""

from __future__ import annotations

from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext
from kit.verify.tolerance import compare_logits, limit_note

REFERENCE = "peft_merge"


def check(ctx: VerifyContext) -> dict:
    ref = ctx.logits(REFERENCE)
    figures = {name: compare(ctx, ref, name) for name in ctx.path_names() if name != REFERENCE}
    failed = [n for n, f in figures.items() if not f["passed"]]
    worst = max(f["max_abs_diff"] for f in figures.values())
    return {
        "passed": not failed,
        "figures": {"reference": REFERENCE, "probes": len(ref), "paths": figures},
        "tolerance": ctx.tol.describe(),
        "detail": (
            "; ".join(why(n, figures[n], ctx) for n in failed)
            if failed
            else f"{len(figures)} paths agree with {REFERENCE}; worst max|diff| {worst:.2e}"
        ),
    }


def why(name: str, f: dict, ctx: VerifyContext) -> str:

    limit = limit_note(f, ctx.tol)
    return (
        f"{name} vs {REFERENCE}: max|logit diff| {f['max_abs_diff']:.3g}{limit}, top-1 agreement "
        f"{f['top1_agreement']:.3f}, {f['top1_mismatches']} top-1 mismatches of {f['positions']} positions"
    )


def compare(ctx: VerifyContext, ref: list, name: str) -> dict:

    return compare_logits(ref, ctx.logits(name), ctx.tol)


CHECK = VerifyCheck("logits", check, "probe-set logits: exported full model, PEFT merge_and_unload, in-memory merge, direct")
