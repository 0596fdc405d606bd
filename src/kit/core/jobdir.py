"""A job dir on disk: the one owner of every name in it.

Nothing else builds a path inside a job dir by hand: a phase asks ``JobDir`` for its output
(``job.output("adapter")``), which records the name in ``.kit_outputs`` before the folder exists.
So ``set_aside`` moves every output of an unfinished attempt, including those of a phase that did
not exist when this module was written, and nothing else (a run dir may be shared:
``hydra.run.dir=.`` must never move the user's own files).

``summary.json`` is written atomically (a per-process temp file, then rename) and every
read-modify-write holds ``.summary.lock``, so two writers (``kit eval`` and ``kit verify`` on the
same job) serialize and neither loses the other's entry.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kit.core.config import compose, one_line
from kit.core.errors import CheckpointChanged, KitError
from kit.core.identity import changed_adapter
from kit.core.results import Checkpoint
from kit.core.summary import Status, Summary

UNREADABLE, INTERRUPTED = Status.UNREADABLE, Status.INTERRUPTED  # kept: names older callers use


@dataclass(frozen=True)
class JobDir:
    """``<job>/``: its summary, its outputs, its earlier attempts."""

    path: Path

    SUMMARY = "summary.json"
    SUMMARY_LOCK = ".summary.lock"
    SUMMARY_UNREADABLE = "summary.json.unreadable"  # a damaged summary, kept beside the new one
    OUTPUTS = ".kit_outputs"  # the names of the outputs this attempt's phases created, one per line
    ATTEMPTS = "attempts"  # <job>/attempts/<n>/: the files of earlier unfinished attempts
    HYDRA = ".hydra"
    INSPECT_LOGS = "inspect_logs"
    WANDB = "wandb"
    # Outputs of the phases of this kit version (also found by name in job dirs written before
    # .kit_outputs existed); a new phase needs no entry here: job.output() records its name.
    KNOWN_OUTPUTS = (
        "adapter",
        "hf_model",
        "merged",
        "modifiers",
        "modifiers.json",
        "router_learned.json",
        "torchtune_out",
        "torchtune.yaml",
        "metrics.jsonl",
        "verify",
        "verify.json",
        "verify.md",
    )
    # Checkpoints: a folder of one of these means an attempt got as far as storing something
    CHECKPOINTS = ("adapter", "hf_model", "merged", "modifiers", "torchtune_out")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # -- outputs ------------------------------------------------------------------------

    def output(self, name: str) -> Path:
        """The path of output ``name``, recorded as this attempt's before anything is written there."""
        if "/" in name or name in ("", ".", "..", self.ATTEMPTS):
            raise ValueError(f"output name {name!r}; expected one plain file or folder name")
        self.path.mkdir(parents=True, exist_ok=True)
        if name not in self.recorded_outputs():
            with open(self.path / self.OUTPUTS, "a") as f:
                f.write(name + "\n")
                f.flush()
                os.fsync(f.fileno())
        return self.path / name

    def recorded_outputs(self) -> list[str]:
        try:
            return [n for n in (self.path / self.OUTPUTS).read_text().splitlines() if n]
        except FileNotFoundError:
            return []

    def job_log(self) -> list[Path]:
        """Hydra's log of the job (``<job name>.log``, e.g. ``train.log``)."""
        return sorted(self.path.glob("*.log"))

    def attempt_files(self) -> list[Path]:
        """Everything an attempt wrote here: summary (and its temp files), outputs, Hydra's files, logs."""
        names = {
            self.SUMMARY,
            self.SUMMARY_UNREADABLE,
            self.OUTPUTS,
            self.HYDRA,
            self.INSPECT_LOGS,
            self.WANDB,
            *self.KNOWN_OUTPUTS,
            *self.recorded_outputs(),
        }
        found = [self.path / n for n in sorted(names) if (self.path / n).exists()]
        temps = sorted(self.path.glob(f".{self.SUMMARY}.*tmp"))
        return found + temps + self.job_log()

    def existing_outputs(self) -> list[str]:
        """The checkpoints an unfinished attempt left (its other files are not worth refusing for)."""
        recorded = [n for n in self.recorded_outputs() if n not in self.KNOWN_OUTPUTS and (self.path / n).is_dir()]
        return [n for n in self.CHECKPOINTS if (self.path / n).exists()] + recorded

    # -- summary.json -------------------------------------------------------------------

    def read(self) -> Summary | None:
        """The job's summary (None: there is none). A file that cannot be read as a JSON object
        (truncated by a crash or a full disk) reads as an unfinished attempt that names the file:
        it never blocks a resume or a report, and the file itself is kept (set_aside moves it)."""
        data = self.read_json()
        return None if data is None else Summary.from_json(data)

    def read_json(self) -> dict | None:
        path = self.path / self.SUMMARY
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
            return unreadable(path, f"is unreadable ({why})", self.path)
        if not isinstance(data, dict):
            return unreadable(path, f"holds a {type(data).__name__}", self.path)
        return data

    def write(self, summary: Summary | dict) -> None:
        """Atomic: a per-process temp file renamed over the summary (readers never see half)."""
        data = summary.to_json() if isinstance(summary, Summary) else summary
        tmp = self.path / f".{self.SUMMARY}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(data, indent=2, default=str))
            tmp.replace(self.path / self.SUMMARY)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def summary_lock(self) -> Iterator[None]:
        """Serializes read-modify-write of summary.json across processes (a blocking flock)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / self.SUMMARY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the flock

    def update(self, change: Callable[[Summary], None]) -> Summary:
        """Read the summary on disk, apply ``change``, write it back, under the summary lock."""
        with self.summary_lock():
            summary = self.read()
            if summary is None or summary.status == Status.UNREADABLE:
                raise KitError(f"{str(self.path / self.SUMMARY)!r} is missing or unreadable; expected the summary of a kit job")
            change(summary)
            self.write(summary)
            return summary

    def is_done(self) -> bool:
        return (self.read_json() or {}).get("status") == Status.DONE

    # -- attempts ------------------------------------------------------------------------

    def set_aside(self) -> Path | None:
        """Move an unfinished attempt's files to ``<job>/attempts/<n>/`` so the job can run again in
        a clean dir; returns where they went (None: no unfinished attempt; a done job is never touched).

        Merged temporary models (``kit-merged-*``, full-size, left by a killed eval) are deleted, not
        kept: they are copies of base + adapter. A summary left at ``running`` (the attempt was
        killed) is marked ``interrupted``; an unreadable one is kept as it is."""
        if not self.path.is_dir() or self.is_done():
            return None
        summary = self.read_json()
        if not (summary or self.existing_outputs()):
            return None
        for tmp in self.path.glob("kit-merged-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        entries = self.attempt_files()
        attempts = self.path / self.ATTEMPTS
        n = 1 + max((int(p.name) for p in attempts.glob("*") if p.name.isdigit()), default=0)
        dest = attempts / str(n)
        dest.mkdir(parents=True)
        for entry in entries:
            entry.rename(dest / entry.name)
        if summary and summary.get("status") == Status.RUNNING:
            summary.update(status=INTERRUPTED, error=summary.get("error") or "ended while running (killed or interrupted)")
            JobDir(dest).write(summary)
        return dest

    def attempts(self) -> list[Path]:
        """Earlier attempts, oldest first."""
        found = [p for p in (self.path / self.ATTEMPTS).glob("*") if p.name.isdigit()]
        return sorted(found, key=lambda p: int(p.name))

    def mark_failed(self, overrides: list[str], error: str) -> None:
        """Record a failure the job could not write itself (killed, out of memory, time limit)."""
        if self.is_done():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with self.summary_lock():
            summary = self.read_json() or {"overrides": overrides, "job_dir": str(self.path)}
            if summary.get("status") == UNREADABLE:  # keep its bytes beside the new summary, never overwrite them
                (self.path / self.SUMMARY).replace(self.path / self.SUMMARY_UNREADABLE)
                summary = {"overrides": overrides, "job_dir": str(self.path), "unreadable_before": summary["error"]}
            summary.update(status=Status.FAILED, error=error, finished=time.time())
            self.write(summary)


def as_job(job: JobDir | Path | str) -> JobDir:
    """A JobDir for a job dir given either way (stages take both: tests and the API pass paths)."""
    return job if isinstance(job, JobDir) else JobDir(Path(job))


def unreadable(path: Path, why: str, job_dir: Path) -> dict:
    return {"status": UNREADABLE, "error": f"{str(path)!r} {why}; expected kit's JSON summary", "job_dir": str(job_dir)}


# ---------------------------------------------------------------- functions of the public API


def read_summary(job_dir: Path) -> dict | None:
    """The job's summary as plain JSON (``kit.read_summary``); see ``JobDir.read``."""
    return JobDir(job_dir).read_json()


def write_summary(job_dir: Path, summary: dict | Summary) -> None:
    JobDir(job_dir).write(summary)


def is_done(job_dir: Path) -> bool:
    return JobDir(job_dir).is_done()


def set_aside(job_dir: Path) -> Path | None:
    return JobDir(job_dir).set_aside()


def mark_failed(job_dir: Path, overrides: list[str], error: str) -> None:
    JobDir(job_dir).mark_failed(overrides, error)


def existing_outputs(job_dir: Path) -> list[str]:
    return JobDir(job_dir).existing_outputs()


def skip_message(job_dir: Path) -> str:
    return f"kit: {job_dir} already done; skipping (its results are kept)"


def point_overrides(overrides: list[str]) -> list[str]:
    """A sweep point's own overrides: without ``launcher.*`` (how it was submitted, not what it runs),
    so a sweep submitted detached and re-run attached (or the reverse) is the same sweep."""
    return [o for o in overrides if not o.lstrip("+~").startswith("launcher.")]


def find_jobs(target: Path) -> list[Path]:
    if (target / JobDir.SUMMARY).is_file():
        return [target]
    if not target.is_dir():
        raise KitError(f"{str(target)!r} is not a directory; expected a job dir or a sweep dir of kit runs")
    jobs = [p.parent for p in target.glob(f"*/{JobDir.SUMMARY}")]
    if not jobs:
        raise KitError(f"{str(target)!r} holds no summary.json (nor do its subfolders); expected a job dir or a sweep dir")
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def job_overrides(job_dir: Path, summary: dict) -> list[str]:
    from omegaconf import OmegaConf

    saved = job_dir / JobDir.HYDRA / "overrides.yaml"
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
    if summary.get("status") not in (Status.DONE, Status.UNVERIFIED) or not checkpoint:
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
        raise CheckpointChanged(changed)
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
