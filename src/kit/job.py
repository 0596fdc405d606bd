"""One training job: train -> export -> evaluate -> summary.json -> W&B.

Read top to bottom, this is the whole workflow. A job dir that already holds a
finished ``summary.json`` is never touched again (re-running a sweep resumes).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.errors import KitError

SUMMARY = "summary.json"


def read_summary(job_dir: Path) -> dict | None:
    path = job_dir / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def is_done(job_dir: Path) -> bool:
    return (read_summary(job_dir) or {}).get("status") == "done"


def skip_message(job_dir: Path) -> str:
    return f"kit: {job_dir} already done; skipping (its results are kept)"


ATTEMPTS = "attempts"  # <job>/attempts/<n>/: the files of earlier unfinished attempts
# What a job writes in its dir. Only these move aside: a run dir may be shared (hydra.run.dir=.).
JOB_FILES = (SUMMARY, f".{SUMMARY}.tmp", "adapter", "hf_model", "merged", "modifiers", "modifiers.json",
             "router_learned.json", "torchtune_out", "torchtune.yaml", "metrics.jsonl", "inspect_logs",
             "verify", "verify.json", "verify.md", "wandb", ".hydra", "cli.log")


def set_aside(job_dir: Path) -> Path | None:
    """Move an unfinished attempt's files to ``<job>/attempts/<n>/`` so the job can run
    again in a clean dir; returns where they went (None: no unfinished attempt there; a
    done job is never touched)."""
    if not job_dir.is_dir() or is_done(job_dir) or not (read_summary(job_dir) or existing_outputs(job_dir)):
        return None
    entries = [job_dir / n for n in JOB_FILES if (job_dir / n).exists()] + sorted(job_dir.glob("kit-merged-*"))
    attempts = job_dir / ATTEMPTS
    n = 1 + max((int(p.name) for p in attempts.glob("*") if p.name.isdigit()), default=0)
    dest = attempts / str(n)
    dest.mkdir(parents=True)
    for entry in entries:
        entry.rename(dest / entry.name)
    return dest


def mark_failed(job_dir: Path, overrides: list[str], error: str) -> None:
    """Record a failure the job could not write itself (killed, out of memory, time limit)."""
    if is_done(job_dir):
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    summary = read_summary(job_dir) or {"overrides": overrides, "job_dir": str(job_dir)}
    summary.update(status="failed", error=error, finished=time.time())
    write_summary(job_dir, summary)


def write_summary(job_dir: Path, summary: dict) -> None:
    tmp = job_dir / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(job_dir / SUMMARY)


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def preflight(cfg: DictConfig) -> dict:
    """Check every input before any work: one clear error, nothing written."""
    from kit.base_model import resolve_base
    from kit.data import read_jsonl
    from kit.eval import get_strategy
    from kit.inspect_runner import load_task_specs
    from kit.models import family_of, weight_files
    from kit.phases import check as check_phase

    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise KitError(f"missing required config value(s) {sorted(missing)}; set them on the command line")
    base = resolve_base(cfg.model)
    family_of(base).tokenizer_section(base, None)  # supported family, tokenizer files present
    weight_files(base, cfg.model.allow_pickle)
    read_jsonl(cfg.dataset.train_file, (cfg.dataset.prompt_column, cfg.dataset.response_column))
    get_strategy(cfg.eval.strategy)
    check_phase(cfg)
    if cfg.eval.strategy != "none" and cfg.phase.name == "training":
        if not cfg.tasks.specs:
            raise KitError("tasks.specs is empty; expected at least one Inspect task (e.g. kit/parity)")
        load_task_specs(list(cfg.tasks.specs))
    return {"base": base}


def existing_outputs(job_dir: Path) -> list[str]:
    return [n for n in ("adapter", "hf_model", "merged", "modifiers", "torchtune_out") if (job_dir / n).exists()]


def run_job(cfg: DictConfig, job_dir: Path, group: str, run_name: str, overrides: list[str]) -> dict:
    if is_done(job_dir):
        print(skip_message(job_dir))
        return read_summary(job_dir)
    leftovers = existing_outputs(job_dir)
    if leftovers:  # a failed earlier attempt: keep its files, refuse to mix
        raise KitError(
            f"job dir {str(job_dir)!r} holds {leftovers} from an unfinished run; "
            "expected an empty job dir (kit's launchers move such attempts to <job>/attempts/)"
        )
    checked = preflight(cfg)
    from kit.versions import stack_versions

    summary = {
        "status": "running", "name": cfg.name, "group": group, "run_name": run_name,
        "overrides": overrides, "job_dir": str(job_dir), "base_model": str(checked["base"]),
        "started": time.time(), "versions": stack_versions(), "host": os.uname().nodename,
    }
    write_summary(job_dir, summary)
    try:
        summary.update(execute(cfg, job_dir, checked["base"], group, run_name))
        summary["status"] = "done"
    except BaseException as e:
        summary["status"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, KitError):
            summary["traceback"] = traceback.format_exc()
        raise
    finally:
        summary["finished"] = time.time()
        write_summary(job_dir, summary)
    return summary


def execute(cfg: DictConfig, job_dir: Path, base: Path, group: str, run_name: str) -> dict:
    from kit import export, phases, storage, train
    from kit.verify.reference import keep_torchtune_adapter
    from kit.wandb_logger import log_eval, phase_run

    if cfg.phase.name == "modifier":  # several adapters kept separate: kit/phases.py
        return phases.execute_modifiers(cfg, job_dir, base, group, run_name)
    config = plain_config(cfg)
    with phase_run(cfg.logger, job_dir, "train", group, run_name, config):
        trained = train.train(cfg, base, job_dir, Path(cfg.dataset.train_file))
    start = time.perf_counter()
    checkpoint = export.export(str(cfg.checkpointer.kind.value), Path(trained["epoch_dir"]), job_dir, base)
    keep_torchtune_adapter(Path(trained["epoch_dir"]), job_dir)  # the training model, for verify
    shutil.rmtree(job_dir / train.SCRATCH)  # torchtune's per-epoch copies; the export persists
    if cfg.phase.merge:  # the adapter becomes part of a standalone model and is deleted
        checkpoint = phases.merge_training(cfg, job_dir, base, checkpoint)
    export_seconds = time.perf_counter() - start
    with phase_run(cfg.logger, job_dir, "eval", group, run_name, config) as run:
        evaluated = evaluate(cfg, job_dir, base, checkpoint)
        result = {
            "train": {k: v for k, v in trained.items() if k != "epoch_dir"},
            "checkpoint": checkpoint,
            "eval": evaluated["eval"],
            "scores": evaluated["scores"],
            "base_scores": evaluated["base_scores"],
            "evals": [eval_entry(cfg, evaluated, "train")],
            "storage": {"persistent_bytes": export.folder_bytes(job_dir), "temp_peak_bytes": evaluated["temp_peak_bytes"]},
            "timings": {"train_s": trained["seconds"], "export_s": export_seconds, "eval_s": evaluated["eval"]["seconds"]},
        }
        result["storage"]["estimate"] = storage.other_checkpointer(cfg, base, trained["dtype"], trained["adapter_dtype"])
        log_eval(run, result)
    if cfg.verify.after_train:
        result["verify"] = verify_after_train(cfg, job_dir, checkpoint, {**result, "base_model": str(base),
                                                                        "group": group, "run_name": run_name})
    return result


def verify_after_train(cfg: DictConfig, job_dir: Path, checkpoint: dict, summary: dict) -> dict:
    """``kit verify`` on the fresh checkpoint (verify.after_train); a failure is reported, the job's results kept."""
    import sys

    from kit.verify.command import verify_job
    from kit.verify.report import summary_entry

    if cfg.eval.strategy == "none":  # train and export only: no Inspect run, the other checks still do
        cfg = copy.deepcopy(cfg)
        cfg.verify.checks = [c for c in cfg.verify.checks if c != "inspect"]
    report = verify_job(cfg, job_dir, summary, checkpoint, [], summary["run_name"])
    if not report["passed"]:
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        print(f"kit: verify FAILED for {job_dir}: {failed}; see {job_dir / 'verify.md'}", file=sys.stderr)
    return summary_entry(report)


def eval_entry(cfg: DictConfig, evaluated: dict, command: str) -> dict:
    """One evaluation of a checkpoint, as ``summary.json`` keeps it in ``evals`` (appended, never replaced)."""
    settings = {k: cfg.eval[k] for k in ("batch_size", "max_tokens", "temperature", "seed", "device", "dtype")}
    return {
        "command": command, "when": time.time(), "strategy": cfg.eval.strategy, "tasks": list(cfg.tasks.specs),
        "limit": cfg.tasks.limit, "settings": settings, "scores": evaluated["scores"],
        "base_scores": evaluated["base_scores"], "eval": evaluated["eval"],
        "temp_peak_bytes": evaluated["temp_peak_bytes"],
    }


def evaluate(cfg: DictConfig, job_dir: Path, base: Path, checkpoint: dict, peers: list[Path] = ()) -> dict:
    from kit import threads
    from kit.base_scores import base_scores
    from kit.eval import get_strategy
    from kit.eval.context import EvalContext

    threads.apply(threads.choose(os.environ))  # `kit eval` starts here without training first
    log_dir = job_dir / "inspect_logs"
    specs = list(cfg.tasks.specs)
    ctx = EvalContext(
        checkpoint_kind=checkpoint["kind"], checkpoint_path=Path(checkpoint["path"]), base=base,
        tasks=specs, log_dir=log_dir, eval_cfg=cfg.eval,
        tmp_root=Path(cfg.eval.tmp_dir) if cfg.eval.tmp_dir else job_dir,
        trust_remote_code=cfg.model.trust_remote_code, limit=cfg.tasks.limit, peers=list(peers),
    )
    result = get_strategy(cfg.eval.strategy)(ctx)
    base_result = {"scores": {}}
    if cfg.eval.base_scores and cfg.eval.strategy != "none":
        base_result = base_scores(ctx)
    info = {k: v for k, v in result.items() if k not in ("scores",)}
    info["strategy"] = cfg.eval.strategy
    info["base_scores_cached"] = base_result.get("cached")
    return {
        "eval": info,
        "scores": result["scores"],
        "base_scores": base_result["scores"],
        "temp_peak_bytes": result.get("temp_peak_bytes", 0),
    }
