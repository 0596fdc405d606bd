"""``python -m kit eval <job dir | sweep dir> [eval=...] [tasks.specs=[...]] [key=value ...]``

Evaluates existing checkpoints without training. Each job's config is composed
again from its own overrides plus the ones given here (so ``eval=direct`` or
``tasks.specs=[...]`` replace what the job used). All jobs are evaluated in this
one process: with ``direct`` / ``merge_in_memory`` the base is loaded once for
all adapters, with ``vllm`` one server serves them all. Each result is appended
to the job's ``summary.json`` under ``evals`` (nothing earlier is replaced) and
logged to W&B as its own ``job_type=eval`` run. A job that cannot be evaluated
(a broken adapter, say) is reported in one line and leaves its files untouched;
the others still run, and the exit status is 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kit.commands.eval_server import main as eval_server
from kit.core.cli_parser import target_and_overrides
from kit.core.config import plain_config
from kit.core.errors import Interrupted, KitError
from kit.core.identity import RunIdentity
from kit.core.jobdir import (
    JobDir,
    checkpoint_of,
    find_jobs,
    job_config,
    peer_adapters,
    read_summary,
)
from kit.core.locks import locked
from kit.core.record import record
from kit.core.wandb_logger import log_scores
from kit.eval.evaluate import EvalRequest, eval_entry, evaluate
from kit.eval.inspect_runner import load_task_specs
from kit.eval.session import EvalSession

USAGE = (
    "usage: python -m kit eval <job dir | sweep dir> [eval=<strategy>] [tasks.specs=[...]] [key=value ...]\n"
    "       python -m kit eval --server URL [--model auto|base|<modifier>] [tasks.specs=[...]] [key=value ...]"
)


def evaluate_job(job_dir: Path, cfg, summary: dict, peers: list[Path]) -> dict:
    """Evaluate one job's checkpoint; its ``evals`` entry is appended to summary.json (under its lock)."""
    checkpoint = checkpoint_of(job_dir, summary)
    base = Path(summary["base_model"])
    request = EvalRequest.of(cfg)
    # each kit eval its own W&B run (the k-th evaluation of this job): a failed one never marks the
    # job's own eval run failed, and a rerun of the same one resumes it
    k = len(summary.get("evals") or [])
    rid = f"{summary['run_id']}-kiteval{k}" if summary.get("run_id") else None
    identity = RunIdentity(
        summary.get("group", job_dir.name), f"{summary.get('run_name', job_dir.name)}-{cfg.eval.strategy}", rid
    )
    job = JobDir(job_dir)
    with record(
        "kit eval",
        job=job,
        logger=cfg.logger,
        job_type="eval",
        identity=identity,
        config=plain_config(cfg),
        announce=False,
    ) as rec:
        evaluated = evaluate(request, job_dir, base, checkpoint, peers)
        entry = eval_entry(request, evaluated, "kit eval")
        log_scores(rec.run, entry, summary.get("run_id"))
        rec.change = lambda s: s.evals.append(entry)
    return entry


def run(target: Path, overrides: list[str]) -> int:
    with EvalSession():  # resident base and vLLM servers shared by every job, closed at the end
        return evaluate_all(target, overrides)


def evaluate_all(target: Path, overrides: list[str]) -> int:
    jobs = find_jobs(target)
    plans = []
    for job_dir in jobs:  # compose everything first: a bad override fails before any eval
        summary = read_summary(job_dir)
        cfg = job_config(job_dir, summary, overrides)
        plans.append((job_dir, summary, cfg))
    load_task_specs(list(plans[0][2].tasks.specs))
    peers = peer_adapters(plans)
    failed, rows = [], []
    for job_dir, summary, cfg in plans:
        start = time.perf_counter()
        try:
            with locked(job_dir, "job dir"):  # one writer per job dir: refuses while kit train/verify/eval holds it
                entry = evaluate_job(job_dir, cfg, summary, peers)
        except KitError as e:
            print(f"kit: error: {job_dir.name}: {e}", file=sys.stderr)
            failed.append(job_dir.name)
            continue
        except KeyboardInterrupt as e:
            why = f" ({e})" if str(e) else ""
            raise Interrupted(
                f"eval of {job_dir} stopped{why}; its summary.json is unchanged (the scores of "
                f"{[r[0] for r in rows]} were appended to theirs)"
            ) from None
        rows.append((job_dir.name, cfg.eval.strategy, entry["scores"], time.perf_counter() - start))
    for job, strategy, scores, seconds in rows:
        flat = " ".join(f"{t}/{m}={v:.3f}" for t, ms in scores.items() for m, v in ms.items())
        print(f"{job}\t{strategy}\t{flat}\t{seconds:.1f}s")
    if failed:
        print(f"kit: error: {len(failed)} of {len(plans)} job(s) not evaluated: {failed}", file=sys.stderr)
        return 2
    return 0


def main(args: list[str]) -> int:
    if any(a == "--server" or a.startswith("--server=") for a in args):  # a running kit serve
        return eval_server(args)
    parsed = target_and_overrides(args, USAGE)
    return 2 if parsed is None else run(*parsed)
