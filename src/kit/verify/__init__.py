"""``verify``: prove that every way of evaluating an adapter gives the same answer.

Checks (config ``verify.checks``; each a function ``check(ctx) -> dict`` in its own module):

==================  =====================================================================
``logits``          probe-set logits of every eval path (merge, full model, in-memory merge, direct) vs an fp32 reference
``generation``      greedy tokens at batch 1 and in one padded batch; seeded sampling
``inspect``         Inspect scores and completions per strategy, two or more tasks in one run
``adapters``        many adapters on one resident base: bit-identical base, flat memory
``adapter_folder``  the adapter fits the base, matches torchtune.yaml, is the training run's, bit for bit
==================  =====================================================================

Tolerances depend on the dtype (kit/verify/tolerance.py). The report
(``verify.json`` + ``verify.md`` in the job dir) names each check's figures and
tolerances and the verified configuration (versions, hardware).
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.errors import KitError
from kit.core.registry import discover
from kit.core.results import Checkpoint
from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext
from kit.verify.reference import (
    TUNE_ADAPTER,
    model_section,
    peft_adapter_from_tune,
)
from kit.verify.report import apply_threads, environment, write_report
from kit.verify.tolerance import Tolerance


def check_names(cfg, inspect_ran: bool = True) -> list[str]:
    """The checks ``verify.checks`` names, in order; a one-line KitError for an unknown name or for a
    list that would check nothing (empty, or only Inspect checks of a job that runs no Inspect eval)."""
    names = list(dict.fromkeys(str(n) for n in cfg.verify.checks))
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise KitError(f"verify.checks has unknown check(s) {unknown}; expected some of {sorted(CHECKS)}")
    runnable = [n for n in names if inspect_ran or not CHECKS[n].needs_inspect]
    if not runnable:
        why = "is empty" if not names else f"holds only {names}, which need an Inspect eval and eval=none runs none"
        raise KitError(
            f"verify.checks {why}: a verify that checks nothing would read PASSED; expected some of "
            f"{sorted(CHECKS)} (or verify.after_train=false to skip verify)"
        )
    return runnable


def run_check(name: str, ctx) -> dict:
    start = time.perf_counter()
    try:
        result = CHECKS[name].run(ctx)
    except KitError as e:  # e.g. an adapter PEFT cannot load: that check fails, the others still run
        result = {"passed": False, "figures": {}, "tolerance": {}, "detail": str(e)}
    except Exception as e:
        result = {
            "passed": False,
            "figures": {},
            "tolerance": {},
            "detail": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    return {"name": name, **result, "seconds": round(time.perf_counter() - start, 2)}


def make_context(cfg, job_dir: Path, base: Path, checkpoint: Checkpoint, peers, tmp: Path):

    v = cfg.verify
    device = resolve_device(v.device)
    dtype = resolve_dtype(v.dtype, device)
    section = model_section(job_dir) if (job_dir / "torchtune.yaml").is_file() else None
    tune_adapter = job_dir / TUNE_ADAPTER if (job_dir / TUNE_ADAPTER).is_file() else None
    full = checkpoint.path if checkpoint.kind == "full" else None
    if full is None:
        adapter = checkpoint.path
    elif tune_adapter is None or section is None:
        raise KitError(
            f"job {str(job_dir)!r} kept a full model but no {TUNE_ADAPTER}; expected a job trained by "
            "this kit version (its adapter paths cannot be rebuilt)"
        )
    else:
        adapter = peft_adapter_from_tune(section, base, tune_adapter, tmp / "adapter")
    return VerifyContext(
        cfg=cfg,
        job_dir=job_dir,
        base=base,
        adapter=adapter,
        full=full,
        tune_adapter=tune_adapter,
        section=section,
        device=device,
        dtype=dtype,
        tol=Tolerance(dtype, float(v.logit_ulps), float(v.logit_abs_floor), float(v.margin_ulps), float(v.rounding_factor)),
        peers=[Path(p) for p in peers],
    )


def verify_checkpoint(cfg, job_dir: Path, base: Path, checkpoint: Checkpoint, peers=(), checks=None) -> dict:
    """Run ``checks`` (default: the ones ``verify.checks`` names) on one job's checkpoint; write
    verify.json / verify.md; return the report."""

    names = list(checks) if checks is not None else check_names(cfg)
    threads = apply_threads()  # `kit verify` alone gets the thread choice training gets
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kit-verify-") as tmp:
        ctx = make_context(cfg, job_dir, base, checkpoint, peers, Path(tmp))
        try:
            checks = [run_check(name, ctx) for name in names]
        finally:
            ctx.close()
    report = {
        "passed": all(c["passed"] for c in checks),
        "job_dir": str(job_dir),
        "checkpoint": checkpoint.to_json(),
        "base_model": str(base),
        "device": ctx.device,
        "dtype": ctx.dtype,
        "checks": checks,
        "verified_configuration": environment(ctx.device),
        "threads": threads,
        "seconds": round(time.perf_counter() - start, 2),
        "when": time.time(),
    }
    write_report(job_dir, report)
    return report


CHECKS: dict[str, VerifyCheck] = discover(
    __name__, __path__, "CHECK", VerifyCheck
)  # last: check modules import this package's functions
