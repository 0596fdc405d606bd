"""What every kit launcher does around Hydra's own: one sweep point at a time, planned, resumed,
and reported.

- resume: a job whose ``summary.json`` says done is not launched again (Hydra would rewrite its
  ``.hydra/`` files); an unfinished attempt is moved to ``<job>/attempts/<n>/`` and the job runs again;
- every job is awaited and a failure is returned in its JobReturn, not raised (Hydra's sweeper would
  stop at the first), so the other jobs finish and the sweep report lists them all;
- how each job ended, as the launcher saw it, goes to ``<sweep>/launch.json`` (kit.core.sweepdir):
  a job can fail before it writes its own summary, and the sweep report (a Hydra callback, which
  Hydra hands no JobReturn) reads it there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import open_dict

from kit.core import identity
from kit.core.config import redact_overrides, redact_yaml_files
from kit.core.errors import KitError
from kit.core.jobdir import JobDir, point_overrides, skip_message
from kit.core.locks import hold
from kit.core.log import get as get_logger
from kit.core.sweepdir import MULTIRUN, read_launch, write_launch

log = get_logger(__name__)


@dataclass
class Point:
    """One sweep point: its job number, overrides, composed config and job dir."""

    num: int
    overrides: list[str]
    config: Any
    job_dir: Path

    @property
    def run_id(self) -> str:
        """The run id the job itself will compute (kit.core.identity) from this config minus Hydra's keys."""
        HydraConfig.instance().set_config(self.config)  # for ${hydra:...} interpolations
        return identity.run_id(self.config)

    @property
    def shown(self) -> list[str]:
        """The overrides as printed and saved: secrets redacted."""
        return redact_overrides(self.overrides)


def plan(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Point]:
    points = []
    for i, overrides in enumerate(job_overrides):
        num = initial_job_idx + i
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        points.append(Point(num, list(overrides), cfg, job_dir.absolute()))
    return points


def open_sweep(config) -> Path:
    """The sweep dir, locked for this process (one sweep per dir; the second refuses in one line
    naming the holder), with the ``multirun.yaml`` Hydra just wrote stripped of secrets, and the
    previous launch's outcomes cleared (this launch writes its own)."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    try:
        hold(sweep_dir, "sweep dir")
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    redact_yaml_files([sweep_dir / MULTIRUN])
    write_launch(sweep_dir, {})
    return sweep_dir


def returned(point: Point, value: dict, record: bool = True) -> JobReturn:
    """The point's JobReturn: COMPLETED for Hydra (a FAILED one stops its sweeper), the job's own
    status in the value; that status is also recorded in the sweep's launch.json (by the launching
    process only: ``record=False`` on a worker)."""
    if record:
        record_outcome(point, value)
    return JobReturn(overrides=point.overrides, working_dir=str(point.job_dir), status=JobStatus.COMPLETED, _return_value=value)


def record_outcome(point: Point, value: dict) -> None:
    sweep_dir = point.job_dir.parent
    outcomes = read_launch(sweep_dir)
    outcomes[point.num] = {k: value[k] for k in ("status", "error") if value.get(k) is not None}
    write_launch(sweep_dir, outcomes)


def failed(point: Point, error: str) -> JobReturn:
    """The job failed: say so now (one line) and in its summary.json (never a finished one's)."""
    print(f"kit: job #{point.num} ({' '.join(point.shown)}) failed: {error}", file=sys.stderr)
    JobDir(point.job_dir).mark_failed(point.shown, error)
    return returned(point, {"status": "failed", "job_dir": str(point.job_dir), "error": error})


def resume(point: Point) -> JobReturn | None:
    """A JobReturn when the point needs no run (done before), else None (after setting aside
    an unfinished attempt)."""
    job = JobDir(point.job_dir)
    summary = job.read_json()
    if job.is_done():
        if set(point_overrides(summary.get("overrides", []))) != set(point_overrides(point.shown)):
            return failed(
                point,
                (
                    f"job dir {str(point.job_dir)!r} holds a finished run of {summary.get('overrides')}, "
                    "not this point; expected the same sweep command (or a new hydra.sweep.dir)"
                ),
            )
        print(skip_message(point.job_dir))
        return returned(point, {"status": "done", "job_dir": str(point.job_dir), "skipped": True})
    moved = job.set_aside()
    if moved:
        log.info("job #%d: unfinished attempt moved to %s; running it again", point.num, moved)
    return None


def as_reported(point: Point, ret: JobReturn) -> JobReturn:
    """A job that raised becomes a failed JobReturn, so the sweep goes on to its summary; one that
    returned is recorded with the status it returned."""
    if ret.status != JobStatus.COMPLETED:
        return failed(point, error_line(ret._return_value))
    value = ret._return_value if isinstance(ret._return_value, dict) else {"status": "done"}
    record_outcome(point, value)  # a job that failed on bad input said so itself (kit.commands.train)
    return ret


def error_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
