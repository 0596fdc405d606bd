"""One job: the phases of ``phase.pipeline`` run in order, ``summary.json`` written after each.

A job dir that already holds a finished ``summary.json`` is never touched again (re-running a sweep
resumes). The job ends ``done`` only when every phase ran and verify (when it runs) passed; a failure,
an interruption or a failed verify each say so in the summary and never read as a result. A failed
verify (``verify.required``) also stops the job: the phases after it would build on that model.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from kit.core.errors import Interrupted, KitError, disk_full
from kit.core.identity import RunIdentity, run_id
from kit.core.jobdir import JobDir, skip_message
from kit.core.locks import locked
from kit.core.log import get as get_logger
from kit.core.model.resolve import resolve_base
from kit.core.summary import Status, Summary
from kit.core.versions import stack_versions
from kit.job.phase import JobContext
from kit.job.phases import pipeline
from kit.job.preflight import check_inputs

log = get_logger(__name__)


def run_job(cfg: DictConfig, job_dir: Path, identity: RunIdentity, overrides: list[str], checked: bool = False) -> Summary:
    """Run one composed, resolved config in ``job_dir``. ``checked``: its inputs were checked already
    (``python -m kit train`` checks every sweep point before Hydra starts); otherwise they are here."""
    job = JobDir(job_dir)
    with locked(job.path, "job dir"):  # one writer: a second run into this dir refuses, naming the holder
        done = job.read()
        if done is not None and done.is_done:
            refuse_other_config(job, done, run_id(cfg))
            print(skip_message(job.path))
            return done
        leftovers = job.existing_outputs()
        if leftovers:  # a failed earlier attempt: keep its files, refuse to mix
            raise KitError(
                f"job dir {str(job.path)!r} holds {leftovers} from an unfinished run; "
                "expected an empty job dir (kit's launchers move such attempts to <job>/attempts/)"
            )
        base = resolve_base(cfg.model) if checked else check_inputs(cfg)
        return run_phases(cfg, job, base, RunIdentity(identity.group, identity.name, run_id(cfg)), overrides)


def refuse_other_config(job: JobDir, done: Summary, wanted: str) -> None:
    """A finished job dir is the result of one config: asking it for another is a mistake, not a skip."""
    if done.run_id and done.run_id != wanted:
        raise KitError(
            f"job dir {str(job.path)!r} holds a finished run of another config (run id {done.run_id}, "
            f"overrides {done.overrides}); this config's run id is {wanted}; expected the same command "
            "or a new hydra.run.dir"
        )


def run_phases(cfg: DictConfig, job: JobDir, base: Path, identity: RunIdentity, overrides: list[str]) -> Summary:
    phases = pipeline(cfg)
    summary = Summary(
        status=Status.RUNNING,
        job_dir=str(job.path),
        overrides=overrides,
        name=cfg.name,
        group=identity.group,
        run_name=identity.name,
        run_id=identity.run_id,
        base_model=str(base),
        started=time.time(),
        versions=stack_versions(),
        host=os.uname().nodename,
        phases=[p.name for p in phases],
    )
    job.write(summary)
    ctx = JobContext(cfg=cfg, job=job, base=base, identity=identity, summary=summary)
    try:
        for i, phase in enumerate(phases):
            if ctx.notes.get("status") == Status.UNVERIFIED:  # later phases would build on a model verify failed
                summary.error = f"{summary.error}; not run: {[p.name for p in phases[i:]]}"
                break
            if phase.applies(cfg):
                phase.run(ctx)
        summary.status = ctx.notes.get("status", Status.DONE)
    except KeyboardInterrupt as e:  # Ctrl-C, or an Inspect eval it cancelled: never a result
        summary.status, summary.error = Status.INTERRUPTED, f"interrupted{f': {e}' if str(e) else ' (Ctrl-C)'}"
        write_final(job, summary)
        raise Interrupted(interrupted_line(job)) from None
    except BaseException as e:
        full = disk_full_in(e, job.path)
        summary.status = Status.FAILED
        summary.error = str(full) if full else f"{type(e).__name__}: {e}"
        if not isinstance(e, KitError) and not full:
            summary.traceback = traceback.format_exc()
        write_final(job, summary)
        if full:
            raise full from None
        raise
    write_final(job, summary)
    return summary


def write_final(job: JobDir, summary: Summary) -> None:
    """The final summary; on a full disk the failure is still reported (set_aside later marks
    a summary left at ``running`` as interrupted)."""
    summary.finished = time.time()
    summary.timings["total_s"] = summary.finished - summary.started
    try:
        job.write(summary)
    except OSError as e:
        print(
            f"kit: error: could not record status {summary.status!r} in {job / JobDir.SUMMARY}: {e.strerror or e}",
            file=sys.stderr,
        )


def interrupted_line(job: JobDir) -> str:
    """What an interrupted job leaves, and how to go on: the one line the CLI prints."""
    outputs = job.existing_outputs()
    what = f"{', '.join(outputs)} and summary.json" if outputs else "summary.json"
    return (
        f"job {job} stopped; kept {what} (status interrupted, not a result); "
        "run the same command again to redo it (this attempt moves to attempts/)"
    )


def disk_full_in(e: BaseException, job_dir: Path) -> KitError | None:
    """A one-line KitError when ``e`` (or what caused it) is a write that met a full disk.
    Libraries wrap ENOSPC in their own errors (safetensors, torch.save), so their message counts."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and disk_full(e):
            return disk_full(e)
        if "No space left on device" in str(e) or "os error 28" in str(e):
            return KitError(
                f"disk full writing under {job_dir} ({type(e).__name__}); free space there and run the same command again"
            )
        e = e.__cause__ or e.__context__
    return None
