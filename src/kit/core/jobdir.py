"""A job dir on disk: its ``summary.json``, its config, its checkpoint, its earlier attempts.

The bottom of kit: every command and stage reads and writes job dirs through here.
``summary.json`` is written atomically (tmp file + rename), never half.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from kit.core.config import compose, one_line
from kit.core.errors import KitError
from kit.core.identity import changed_adapter
from kit.core.results import Checkpoint

SUMMARY = "summary.json"


UNREADABLE = "unreadable"  # the status of a summary.json that is not a JSON object (truncated, garbled)
INTERRUPTED = "interrupted"  # the status set_aside gives an attempt that ended while "running"


def point_overrides(overrides: list[str]) -> list[str]:
    """A sweep point's own overrides: without ``launcher.*`` (how it was submitted, not what it runs),
    so a sweep submitted detached and re-run attached (or the reverse) is the same sweep."""
    return [o for o in overrides if not o.lstrip("+~").startswith("launcher.")]


def read_summary(job_dir: Path) -> dict | None:
    """The job's summary (None: there is none). A file that cannot be read as a JSON object
    (truncated by a crash or a full disk) reads as an unfinished attempt that names the file:
    it never blocks a resume or a report, and the file itself is kept (set_aside moves it)."""
    path = job_dir / SUMMARY
    try:
        summary = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
        return {
            "status": UNREADABLE,
            "error": f"{str(path)!r} is unreadable ({why}); expected kit's JSON summary",
            "job_dir": str(job_dir),
        }
    if not isinstance(summary, dict):
        return {
            "status": UNREADABLE,
            "error": f"{str(path)!r} holds a {type(summary).__name__}, not kit's JSON summary",
            "job_dir": str(job_dir),
        }
    return summary


def is_done(job_dir: Path) -> bool:
    return (read_summary(job_dir) or {}).get("status") == "done"


def skip_message(job_dir: Path) -> str:
    return f"kit: {job_dir} already done; skipping (its results are kept)"


ATTEMPTS = "attempts"  # <job>/attempts/<n>/: the files of earlier unfinished attempts
# What a job writes in its dir. Only these move aside: a run dir may be shared (hydra.run.dir=.).
JOB_FILES = (
    SUMMARY,
    f".{SUMMARY}.tmp",
    f"{SUMMARY}.unreadable",
    "adapter",
    "hf_model",
    "merged",
    "modifiers",
    "modifiers.json",
    "router_learned.json",
    "torchtune_out",
    "torchtune.yaml",
    "metrics.jsonl",
    "inspect_logs",
    "verify",
    "verify.json",
    "verify.md",
    "wandb",
    ".hydra",
    "cli.log",
)


def set_aside(job_dir: Path) -> Path | None:
    """Move an unfinished attempt's files to ``<job>/attempts/<n>/`` so the job can run
    again in a clean dir; returns where they went (None: no unfinished attempt there; a
    done job is never touched).

    Merged temporary models (``kit-merged-*``, full-size, left by a killed eval) are deleted,
    not kept: they are copies of base + adapter. A summary left at ``running`` (the attempt
    was killed) is marked ``interrupted``; an unreadable one is kept as it is."""
    summary = read_summary(job_dir) if job_dir.is_dir() else None
    if not job_dir.is_dir() or is_done(job_dir) or not (summary or existing_outputs(job_dir)):
        return None
    for tmp in job_dir.glob("kit-merged-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    entries = [job_dir / n for n in JOB_FILES if (job_dir / n).exists()]
    attempts = job_dir / ATTEMPTS
    n = 1 + max((int(p.name) for p in attempts.glob("*") if p.name.isdigit()), default=0)
    dest = attempts / str(n)
    dest.mkdir(parents=True)
    for entry in entries:
        entry.rename(dest / entry.name)
    if summary and summary.get("status") == "running":
        summary.update(status=INTERRUPTED, error=summary.get("error") or "ended while running (killed or interrupted)")
        write_summary(dest, summary)
    return dest


def mark_failed(job_dir: Path, overrides: list[str], error: str) -> None:
    """Record a failure the job could not write itself (killed, out of memory, time limit)."""
    if is_done(job_dir):
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    summary = read_summary(job_dir) or {"overrides": overrides, "job_dir": str(job_dir)}
    if summary.get("status") == UNREADABLE:  # keep its bytes beside the new summary, never overwrite them
        (job_dir / SUMMARY).replace(job_dir / f"{SUMMARY}.unreadable")
        summary = {"overrides": overrides, "job_dir": str(job_dir), "unreadable_before": summary["error"]}
    summary.update(status="failed", error=error, finished=time.time())
    write_summary(job_dir, summary)


def write_summary(job_dir: Path, summary: dict) -> None:
    tmp = job_dir / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(job_dir / SUMMARY)


def existing_outputs(job_dir: Path) -> list[str]:
    return [n for n in ("adapter", "hf_model", "merged", "modifiers", "torchtune_out") if (job_dir / n).exists()]


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

    try:
        cfg = compose("train", job_overrides(job_dir, summary) + overrides)
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise KitError(one_line(e)) from None
    return cfg


def checkpoint_of(job_dir: Path, summary: dict) -> Checkpoint:
    """The job's checkpoint, found inside the job dir even if the dir was moved since."""
    checkpoint = summary.get("checkpoint")
    if summary.get("status") != "done" or not checkpoint:
        raise KitError(f"job {str(job_dir)!r} has no finished checkpoint (status {summary.get('status')!r}); expected a done job")
    if checkpoint["kind"] == "modifiers":
        raise KitError(
            f"job {str(job_dir)!r} is a phase=modifier job; expected a training job "
            "(serve its modifiers with kit serve and use kit eval --server)"
        )
    recorded = Path(checkpoint["path"])
    try:
        path = job_dir / recorded.relative_to(summary.get("job_dir", job_dir))
    except ValueError:  # stored outside the job dir
        path = recorded
    if not path.exists():
        raise KitError(f"checkpoint {str(path)!r} of job {str(job_dir)!r} is missing")
    changed = changed_adapter(f"job {str(job_dir)!r}", path, checkpoint.get("content_hash"))
    if changed:  # never scored or served under the identity of the adapter it was trained as
        raise KitError(changed)
    return Checkpoint.from_json({**checkpoint, "path": str(path)})


def peer_adapters(plans: list) -> list[Path]:
    """Every adapter of this call: one vLLM server is sized for all of them."""
    peers = []
    for job_dir, summary, _ in plans:
        try:
            checkpoint = checkpoint_of(job_dir, summary)
        except KitError:
            continue  # reported when that job's turn comes
        if checkpoint.kind == "adapter":
            peers.append(checkpoint.path)
    return peers


# ---------------------------------------------------------------- sweep manifest

MANIFEST = "manifest.json"  # <sweep>/manifest.json: what was submitted, so status/collect need no live launcher


def read_manifest(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise KitError(
            f"{str(path)!r} not found; expected the sweep dir of a kit multirun on submitit "
            "(hydra/launcher=submitit_slurm or local_slurm)"
        )
    return json.loads(path.read_text())


def write_manifest(sweep_dir: Path, manifest: dict) -> None:
    """Written atomically: a status reader never sees half a manifest."""
    tmp = Path(sweep_dir) / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(Path(sweep_dir) / MANIFEST)
