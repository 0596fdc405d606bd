"""One training job: train -> export -> evaluate -> summary.json -> W&B.

Read top to bottom, this is the whole workflow. A job dir that already holds a
finished ``summary.json`` is never touched again (re-running a sweep resumes).
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from kit.core.config import plain_config
from kit.core.errors import Interrupted, KitError, disk_full
from kit.core.identity import adapter_hash, run_id
from kit.core.jobdir import (
    INTERRUPTED,
    SUMMARY,
    existing_outputs,
    is_done,
    read_summary,
    skip_message,
    write_summary,
)
from kit.core.locks import locked
from kit.core.log import get as get_logger
from kit.core.log import timed
from kit.core.results import Checkpoint
from kit.core.versions import stack_versions
from kit.core.wandb_logger import log_checkpoint_artifact, log_eval, phase_run
from kit.eval.evaluate import eval_entry, evaluate
from kit.job.phases import execute_modifiers, merge_training
from kit.job.preflight import check_inputs
from kit.train.export import export, folder_bytes
from kit.train.recipe_config import SCRATCH
from kit.train.run import loss_line, train
from kit.train.storage import other_checkpointer
from kit.verify.reference import keep_torchtune_adapter
from kit.verify.report import summary_entry
from kit.verify.run import verify_job

log = get_logger(__name__)


def run_job(cfg: DictConfig, job_dir: Path, group: str, run_name: str, overrides: list[str]) -> dict:
    with locked(job_dir, "job dir"):  # one writer: a second run into this dir refuses, naming the holder
        return run_locked(cfg, job_dir, group, run_name, overrides)


def run_locked(cfg: DictConfig, job_dir: Path, group: str, run_name: str, overrides: list[str]) -> dict:
    if is_done(job_dir):
        print(skip_message(job_dir))
        return read_summary(job_dir)
    leftovers = existing_outputs(job_dir)
    if leftovers:  # a failed earlier attempt: keep its files, refuse to mix
        raise KitError(
            f"job dir {str(job_dir)!r} holds {leftovers} from an unfinished run; "
            "expected an empty job dir (kit's launchers move such attempts to <job>/attempts/)"
        )
    checked = check_inputs(cfg)
    summary = {
        "status": "running",
        "name": cfg.name,
        "group": group,
        "run_name": run_name,
        "run_id": run_id(cfg),
        "overrides": overrides,
        "job_dir": str(job_dir),
        "base_model": str(checked["base"]),
        "started": time.time(),
        "versions": stack_versions(),
        "host": os.uname().nodename,
    }
    write_summary(job_dir, summary)
    try:
        summary.update(execute(cfg, job_dir, checked["base"], group, run_name))
        summary["status"] = "done"
    except KeyboardInterrupt as e:  # Ctrl-C, or an Inspect eval it cancelled: never a result
        summary.update(status=INTERRUPTED, error=f"interrupted{f': {e}' if str(e) else ' (Ctrl-C)'}")
        finish(job_dir, summary)
        raise Interrupted(kept(job_dir)) from None
    except BaseException as e:
        full = disk_full_in(e, job_dir)
        summary["status"] = "failed"
        summary["error"] = str(full) if full else f"{type(e).__name__}: {e}"
        if not isinstance(e, KitError) and not full:
            summary["traceback"] = traceback.format_exc()
        finish(job_dir, summary)
        if full:
            raise full from None
        raise
    finish(job_dir, summary)
    return summary


def finish(job_dir: Path, summary: dict) -> None:
    """The final summary; on a full disk the failure is still reported (set_aside later marks
    a summary left at ``running`` as interrupted)."""
    summary["finished"] = time.time()
    summary.setdefault("timings", {})["total_s"] = summary["finished"] - summary["started"]
    try:
        write_summary(job_dir, summary)
    except OSError as e:
        print(
            f"kit: error: could not record status {summary['status']!r} in {job_dir / SUMMARY}: {e.strerror or e}",
            file=sys.stderr,
        )


def kept(job_dir: Path) -> str:
    """What an interrupted job leaves, and how to go on: the one line the CLI prints."""
    outputs = existing_outputs(job_dir)
    what = f"{', '.join(outputs)} and summary.json" if outputs else "summary.json"
    return (
        f"job {job_dir} stopped; kept {what} (status interrupted, not a result); "
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


def execute(cfg: DictConfig, job_dir: Path, base: Path, group: str, run_name: str) -> dict:
    if cfg.phase.name == "modifier":  # several adapters kept separate: kit/phases.py
        return execute_modifiers(cfg, job_dir, base, group, run_name)
    config, rid = plain_config(cfg), run_id(cfg)
    with phase_run(cfg.logger, job_dir, "train", group, run_name, config, rid) as train_run:  # results: export inside
        with timed(log, "train") as t:
            trained = train(cfg, base, job_dir, Path(cfg.dataset.train_file), train_run)
            t["detail"] = loss_line(trained)
        with timed(log, "export") as t:
            checkpoint = export(str(cfg.checkpointer.kind.value), Path(trained["epoch_dir"]), job_dir, base)
            keep_torchtune_adapter(Path(trained["epoch_dir"]), job_dir)  # the training model, for verify
            shutil.rmtree(job_dir / SCRATCH)  # torchtune's per-epoch copies; the export persists
            if cfg.phase.merge:  # the adapter becomes part of a standalone model and is deleted
                checkpoint = merge_training(cfg, job_dir, base, checkpoint)
            if checkpoint.kind == "adapter":  # its identity: kit eval / verify refuse it once changed
                checkpoint = checkpoint.replace(content_hash=adapter_hash(checkpoint.path))
            t["detail"] = f"{checkpoint.kind} checkpoint, {checkpoint.bytes} bytes"
        export_seconds = t["seconds"]
        log_checkpoint_artifact(train_run, checkpoint, base)  # results: the train run's output, the base its input
    with phase_run(cfg.logger, job_dir, "eval", group, run_name, config, rid) as run:
        evaluated = evaluate(cfg, job_dir, base, checkpoint)
        result = {
            "train": {k: v for k, v in trained.items() if k != "epoch_dir"},
            "checkpoint": checkpoint.to_json(),
            "eval": evaluated.info,
            "scores": evaluated.scores,
            "base_scores": evaluated.base_scores,
            "evals": [eval_entry(cfg, evaluated, "train")],
            "storage": {"persistent_bytes": folder_bytes(job_dir), "temp_peak_bytes": evaluated.temp_peak_bytes},
            "timings": {
                "train_s": trained["seconds"],
                "export_s": export_seconds,
                "eval_s": evaluated.seconds,
                "base_scores_s": evaluated.info.get("base_scores_seconds"),
            },
        }
        # the estimate follows the checkpoint the job kept (phase.merge turns an adapter job into a full one)
        result["storage"]["estimate"] = other_checkpointer(cfg, base, trained["dtype"], checkpoint.kind, trained["adapter_dtype"])
        log_eval(run, result)
    if cfg.verify.after_train:
        start = time.perf_counter()
        result["verify"] = verify_after_train(
            cfg, job_dir, checkpoint, {**result, "base_model": str(base), "group": group, "run_name": run_name, "run_id": rid}
        )
        result["timings"]["verify_s"] = time.perf_counter() - start
    return result


def verify_after_train(cfg: DictConfig, job_dir: Path, checkpoint: Checkpoint, summary: dict) -> dict:
    """``kit verify`` on the fresh checkpoint (verify.after_train); a failure is reported, the job's results kept."""
    if cfg.eval.strategy == "none":  # train and export only: no Inspect run, the other checks still do
        cfg = copy.deepcopy(cfg)
        cfg.verify.checks = [c for c in cfg.verify.checks if c != "inspect"]
    with timed(log, "verify") as t:
        report = verify_job(cfg, job_dir, summary, checkpoint, [], summary["run_name"])
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        t["detail"] = f"FAILED {failed}" if failed else f"{len(report['checks'])} checks passed"
    if not report["passed"]:
        log.warning("verify FAILED for %s: %s; see %s", job_dir, failed, job_dir / "verify.md")
    return summary_entry(report)
