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

from kit.core.errors import KitError

USAGE = ("usage: python -m kit eval <job dir | sweep dir> [eval=<strategy>] [tasks.specs=[...]] [key=value ...]\n"
         "       python -m kit eval --server URL [--model auto|base|<modifier>] [tasks.specs=[...]] [key=value ...]")


def find_jobs(target: Path) -> list[Path]:
    if (target / "summary.json").is_file():
        return [target]
    if not target.is_dir():
        raise KitError(f"{str(target)!r} is not a directory; expected a job dir or a sweep dir of kit runs")
    jobs = [p.parent for p in target.glob("*/summary.json")]
    if not jobs:
        raise KitError(f"{str(target)!r} holds no summary.json (nor do its subfolders); expected a job dir or a sweep dir")
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def job_overrides(job_dir: Path, summary: dict) -> list[str]:
    from omegaconf import OmegaConf

    saved = job_dir / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(saved)) if saved.is_file() else list(summary.get("overrides", []))


def job_config(job_dir: Path, summary: dict, overrides: list[str]):
    from omegaconf import OmegaConf

    from kit.stages.preflight import compose, one_line

    try:
        cfg = compose("train", job_overrides(job_dir, summary) + overrides)
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise KitError(one_line(e)) from None
    return cfg


def checkpoint_of(job_dir: Path, summary: dict) -> dict:
    """The job's checkpoint, found inside the job dir even if the dir was moved since."""
    checkpoint = summary.get("checkpoint")
    if summary.get("status") != "done" or not checkpoint:
        raise KitError(f"job {str(job_dir)!r} has no finished checkpoint (status {summary.get('status')!r}); expected a done job")
    if checkpoint["kind"] == "modifiers":
        raise KitError(f"job {str(job_dir)!r} is a phase=modifier job; expected a training job "
                       "(serve its modifiers with kit serve and use kit eval --server)")
    recorded = Path(checkpoint["path"])
    try:
        path = job_dir / recorded.relative_to(summary.get("job_dir", job_dir))
    except ValueError:  # stored outside the job dir
        path = recorded
    if not path.exists():
        raise KitError(f"checkpoint {str(path)!r} of job {str(job_dir)!r} is missing")
    return {**checkpoint, "path": str(path)}


def evaluate_job(job_dir: Path, cfg, summary: dict, peers: list[Path]) -> dict:
    from kit.stages.job import eval_entry, evaluate, plain_config, read_summary, write_summary
    from kit.core.wandb_logger import log_scores, phase_run

    checkpoint = checkpoint_of(job_dir, summary)
    base = Path(summary["base_model"])
    name = f"{summary.get('run_name', job_dir.name)}-{cfg.eval.strategy}"
    with phase_run(cfg.logger, job_dir, "eval", summary.get("group", job_dir.name), name, plain_config(cfg)) as run:
        evaluated = evaluate(cfg, job_dir, base, checkpoint, peers)
        entry = eval_entry(cfg, evaluated, "kit eval")
        log_scores(run, entry)
    fresh = read_summary(job_dir)  # re-read: append to what is on disk now
    fresh.setdefault("evals", []).append(entry)
    write_summary(job_dir, fresh)
    return entry


def peer_adapters(plans: list) -> list[Path]:
    """Every adapter of this call: one vLLM server is sized for all of them."""
    peers = []
    for job_dir, summary, _ in plans:
        try:
            checkpoint = checkpoint_of(job_dir, summary)
        except KitError:
            continue  # reported when that job's turn comes
        if checkpoint["kind"] == "adapter":
            peers.append(Path(checkpoint["path"]))
    return peers


def run(target: Path, overrides: list[str]) -> int:
    from kit.stages.inspect_runner import load_task_specs
    from kit.stages.job import read_summary

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
            entry = evaluate_job(job_dir, cfg, summary, peers)
        except KitError as e:
            print(f"kit: error: {job_dir.name}: {e}", file=sys.stderr)
            failed.append(job_dir.name)
            continue
        rows.append((job_dir.name, cfg.eval.strategy, entry["scores"], time.perf_counter() - start))
    for job, strategy, scores, seconds in rows:
        flat = " ".join(f"{t}/{m}={v:.3f}" for t, ms in scores.items() for m, v in ms.items())
        print(f"{job}\t{strategy}\t{flat}\t{seconds:.1f}s")
    if failed:
        print(f"kit: error: {len(failed)} of {len(plans)} job(s) not evaluated: {failed}", file=sys.stderr)
        return 2
    return 0


def target_and_overrides(args: list[str], usage: str) -> tuple[Path, list[str]] | None:
    """``<job dir | sweep dir> [key=value ...]`` (shared with ``kit verify``); None after printing usage."""
    paths = [a for a in args if "=" not in a and not a.startswith("-")]
    if len(paths) != 1 or any(a.startswith("-") for a in args):
        print(usage, file=sys.stderr)
        return None
    return Path(paths[0]), [a for a in args if "=" in a]


def main(args: list[str]) -> int:
    if any(a == "--server" or a.startswith("--server=") for a in args):  # a running kit serve
        from kit.commands.eval_server import main as eval_server

        return eval_server(args)
    parsed = target_and_overrides(args, USAGE)
    return 2 if parsed is None else run(*parsed)
