"""Config group ``phase``: the two lives of a LoRA (design notes 003/004).

``training``  a training adapter: trained, exported, evaluated (``kit/job.py``). With
              ``phase.merge=true`` it is merged into the base and deleted: ``<job>/merged/``
              is a standalone model, its lineage in ``kit_lineage.json``, usable as a later
              phase's base (``model.path=<job>/merged``).
``modifier``  runtime modifiers: named LoRAs trained on ONE base and kept separate, each
              with its own dataset (``phase.modifiers``); the registry ``modifiers.json`` and
              a learned router are written next to them.
``runtime``   served by ``python -m kit serve`` (``kit/serve/``), never trained.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.config import plain_config
from kit.core.data import read_jsonl
from kit.core.errors import KitError
from kit.core.identity import LINEAGE, adapter_hash, base_fingerprint, file_sha256, read_lineage, run_id
from kit.core.log import get, timed
from kit.core.results import Checkpoint
from kit.core.wandb_logger import log_eval, phase_run
from kit.eval.evaluate import evaluate
from kit.eval.inspect_runner import load_task_specs
from kit.lora.merge import merge_to_folder
from kit.runtime.registry import check_name, write_registry
from kit.runtime.router import LEARNED_FILE, train_learned
from kit.train.export import export, folder_bytes
from kit.train.recipe_config import SCRATCH
from kit.train.run import loss_line, train

log = get(__name__)


def check(cfg: DictConfig) -> None:
    """Preflight for the phase: one clear error before any job dir is written."""
    name = cfg.phase.name
    if name == "runtime":
        raise KitError("phase=runtime is served, not trained; run `python -m kit serve serve.registry=<modifier job dir>`")
    if name == "modifier":
        check_modifiers(cfg)


def check_modifiers(cfg: DictConfig) -> None:

    if not cfg.phase.modifiers:
        raise KitError("phase=modifier needs phase.modifiers (name -> train_file, columns); expected e.g. +experiment=modifiers")
    for name, spec in cfg.phase.modifiers.items():
        check_name(name)
        read_jsonl(spec.train_file, (spec.prompt_column, spec.response_column))
        if spec.tasks and cfg.eval.strategy != "none":
            load_task_specs(list(spec.tasks))
        for pattern in spec.patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise KitError(f"phase.modifiers.{name}.patterns: {pattern!r} is not a regex ({e})") from None


# -- phase=training, merge=true ----------------------------------------------------------


def merge_training(cfg: DictConfig, job_dir: Path, base: Path, checkpoint: Checkpoint) -> Checkpoint:
    """Merge the trained adapter into the base -> ``<job>/merged``; the adapter is deleted."""

    if checkpoint.kind != "adapter":  # checkpointer=full is merged by torchtune already
        out = checkpoint.path
    else:
        adapter, out = checkpoint.path, job_dir / "merged"
        merge_to_folder(base, adapter, out)
        shutil.rmtree(adapter)
    lineage = {
        "kind": "merged",
        "created": time.time(),
        "job_dir": str(job_dir),
        "base": {"path": str(base), "fingerprint": base_fingerprint(base), "lineage": read_lineage(base)},
        "lora": OmegaConf.to_container(cfg.lora, resolve=True),
        "dataset": {"file": str(cfg.dataset.train_file), "sha256": file_sha256(Path(cfg.dataset.train_file))},
        "fingerprint": base_fingerprint(out),
    }
    (out / LINEAGE).write_text(json.dumps(lineage, indent=2))
    return Checkpoint("full", out, folder_bytes(out), merged_from=checkpoint.kind)


# -- phase=modifier ------------------------------------------------------------------------


def modifier_config(cfg: DictConfig, name: str, spec) -> DictConfig:
    """The job's config as one modifier trains and is scored with it: its dataset, rank,
    training budget (epochs, lr) and tasks."""
    own = {
        "dataset": {
            "name": name,
            "train_file": spec.train_file,
            "prompt_column": spec.prompt_column,
            "response_column": spec.response_column,
        }
    }
    if spec.rank is not None:
        own["lora"] = {"rank": spec.rank}
    trainer = {key: spec[key] for key in ("epochs", "lr") if spec[key] is not None}
    if trainer:
        own["trainer"] = trainer
    own["tasks"] = {"specs": list(spec.tasks)}
    if not spec.tasks:
        own["eval"] = {"strategy": "none"}
    return OmegaConf.merge(cfg, own)


def train_modifier(cfg: DictConfig, root: Path, base: Path, name: str, fingerprint: str, group: str, run_name: str) -> dict:
    """Train, export and score one modifier under ``<job>/modifiers/<name>/``; its registry entry."""

    spec = cfg.phase.modifiers[name]
    own = modifier_config(cfg, name, spec)
    job_dir = root / "modifiers" / name
    job_dir.mkdir(parents=True)
    dataset = Path(spec.train_file)
    rid = run_id(own)  # each modifier its own identity: a requeued job resumes its W&B runs
    budget = f"{own.trainer.epochs} epochs, lr {own.trainer.lr:g}, rank {own.lora.rank}"
    with (
        phase_run(cfg.logger, job_dir, "train", group, f"{run_name}-{name}", plain_config(own), rid) as run,
        timed(log, f"modifier {name}: train ({budget})") as t,
    ):
        trained = train(own, base, job_dir, dataset, run)
        t["detail"] = loss_line(trained)
    checkpoint = export("adapter", Path(trained["epoch_dir"]), job_dir, base)
    shutil.rmtree(job_dir / SCRATCH)
    with phase_run(cfg.logger, job_dir, "eval", group, f"{run_name}-{name}", plain_config(own), rid) as run:
        evaluated = evaluate(own, job_dir, base, checkpoint)
        log_eval(
            run,
            {
                "scores": evaluated.scores,
                "base_scores": evaluated.base_scores,
                "checkpoint": checkpoint.to_json(),
                "storage": {"persistent_bytes": folder_bytes(job_dir), "temp_peak_bytes": evaluated.temp_peak_bytes},
                "timings": {"train_s": trained["seconds"], "eval_s": evaluated.seconds},
            },
        )
    return {
        "name": name,
        "path": str(checkpoint.path.relative_to(root)),
        "rank": int(own.lora.rank),
        "alpha": float(own.lora.alpha),
        "bytes": checkpoint.bytes,
        "content_hash": adapter_hash(checkpoint.path),  # kit serve refuses it once changed
        "base_fingerprint": fingerprint,
        "dataset": {
            "file": str(dataset),
            "sha256": file_sha256(dataset),
            "rows": len(read_jsonl(dataset)),
            "prompt_column": spec.prompt_column,
            "response_column": spec.response_column,
        },
        "training": {k: v for k, v in trained.items() if k != "epoch_dir"},
        "tasks": list(spec.tasks),
        "scores": evaluated.scores,
        "base_scores": evaluated.base_scores,
        "keywords": list(spec.keywords),
        "patterns": list(spec.patterns),
    }


def execute_modifiers(cfg: DictConfig, job_dir: Path, base: Path, group: str, run_name: str) -> dict:
    """Every modifier of ``phase.modifiers`` on the one base, then the registry and the learned router."""

    start = time.perf_counter()
    fingerprint = base_fingerprint(base)
    entries = [train_modifier(cfg, job_dir, base, name, fingerprint, group, run_name) for name in cfg.phase.modifiers]
    train_learned(job_dir, entries).save(job_dir / LEARNED_FILE)
    registry = write_registry(job_dir, base, fingerprint, entries, LEARNED_FILE)
    return {
        "checkpoint": Checkpoint("modifiers", registry, sum(e["bytes"] for e in entries)).to_json(),
        "modifiers": {e["name"]: {k: e[k] for k in ("path", "rank", "bytes", "scores", "base_scores")} for e in entries},
        "scores": {f"{e['name']}/{task}": m for e in entries for task, m in e["scores"].items()},
        "base_scores": {f"{e['name']}/{task}": m for e in entries for task, m in e["base_scores"].items()},
        "storage": {"persistent_bytes": folder_bytes(job_dir), "temp_peak_bytes": 0},
        "timings": {"total_s": time.perf_counter() - start, "train_s": sum(e["training"]["seconds"] for e in entries)},
    }
