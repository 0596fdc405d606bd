"""Phase ``modifiers`` (``phase=modifier``): runtime modifiers, named LoRAs trained on ONE base and kept
separate, each with its own dataset, budget and tasks (``phase.modifiers``). Each is trained, exported
and scored under ``<job>/modifiers/<name>/``; the registry ``modifiers.json`` and a learned router are
written beside them (``python -m kit serve serve.registry=<job>`` serves them)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.config import plain_config
from kit.core.data import read_jsonl
from kit.core.errors import KitError
from kit.core.identity import RunIdentity, adapter_hash, base_fingerprint, file_sha256, run_id
from kit.core.jobdir import JobDir
from kit.core.record import record
from kit.core.results import Checkpoint
from kit.core.wandb_logger import log_checkpoint_artifact, log_eval
from kit.eval.evaluate import EvalRequest, evaluate
from kit.eval.inspect_runner import load_task_specs
from kit.eval.strategies import get_strategy
from kit.job.phase import JobContext, Phase
from kit.job.phases.train import check_dataset, check_trainable
from kit.runtime.registry import REGISTRY, check_name, write_registry
from kit.runtime.router import LEARNED_FILE, train_learned
from kit.train.export import export, folder_bytes
from kit.train.recipe_config import SCRATCH
from kit.train.run import loss_line, train


class ModifiersPhase(Phase):
    name = "modifiers"
    what = "named LoRAs on one base, kept separate; their registry (modifiers.json) and a learned router"

    def check(self, cfg: DictConfig, base: Path) -> None:
        if not cfg.phase.modifiers:
            raise KitError(
                "phase=modifier needs phase.modifiers (name -> train_file, columns); expected e.g. +experiment=modifiers"
            )
        check_trainable(cfg, base)
        get_strategy(str(cfg.eval.strategy)).refuse_before_training(cfg, base)
        for name, spec in cfg.phase.modifiers.items():
            check_name(name)
            check_dataset(spec.train_file, (spec.prompt_column, spec.response_column), base)
            if spec.tasks and str(cfg.eval.strategy) != "none":
                load_task_specs(list(spec.tasks))
            for pattern in spec.patterns:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise KitError(f"phase.modifiers.{name}.patterns: {pattern!r} is not a regex ({e})") from None

    def run(self, ctx: JobContext) -> None:
        with ctx.record("modifiers", timing="modifiers_s", announce=False) as rec:
            fingerprint = base_fingerprint(ctx.base)
            root = ctx.job.output("modifiers")
            entries, temp_peak = [], 0
            for name in ctx.cfg.phase.modifiers:
                entry, peak = train_modifier(ctx, root, name, fingerprint)
                entries.append(entry)
                temp_peak = max(temp_peak, peak)
            train_learned(ctx.job.path, entries).save(ctx.job.output(LEARNED_FILE))
            ctx.job.output(REGISTRY)
            registry = write_registry(ctx.job.path, ctx.base, fingerprint, entries, LEARNED_FILE)
            ctx.checkpoint = Checkpoint("modifiers", registry, sum(e["bytes"] for e in entries))
            rec.update.update(
                checkpoint=ctx.checkpoint.to_json(),
                modifiers={e["name"]: {k: e[k] for k in ("path", "rank", "bytes", "scores", "base_scores")} for e in entries},
                scores={f"{e['name']}/{task}": m for e in entries for task, m in e["scores"].items()},
                base_scores={f"{e['name']}/{task}": m for e in entries for task, m in e["base_scores"].items()},
                storage={"persistent_bytes": folder_bytes(ctx.job.path), "temp_peak_bytes": temp_peak},
            )
            rec.timings["train_s"] = sum(e["training"]["seconds"] for e in entries)


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


def train_modifier(ctx: JobContext, root: Path, name: str, fingerprint: str) -> tuple[dict, int]:
    """Train, export and score one modifier under ``<job>/modifiers/<name>/``: (its registry entry,
    the temporary disk its eval used)."""
    spec = ctx.cfg.phase.modifiers[name]
    own = modifier_config(ctx.cfg, name, spec)
    sub = JobDir(root / name)
    sub.path.mkdir(parents=True)
    dataset = Path(spec.train_file)
    # each modifier its own identity: a requeued job resumes its W&B runs
    identity = RunIdentity(ctx.identity.group, f"{ctx.identity.name}-{name}", run_id(own))
    budget = f"{own.trainer.epochs} epochs, lr {own.trainer.lr:g}, rank {own.lora.rank}"
    part = {"job": sub, "logger": ctx.cfg.logger, "identity": identity, "config": plain_config(own)}
    with record(f"modifier {name}: train ({budget})", job_type="train", keep=False, **part) as rec:
        trained = train(own, ctx.base, sub, dataset, rec.run)
        rec.detail = loss_line(trained)
        checkpoint = export("adapter", Path(trained["epoch_dir"]), sub, ctx.base)
        shutil.rmtree(sub / SCRATCH)
        log_checkpoint_artifact(rec.run, checkpoint, ctx.base, kind="modifier")  # this train run made it
    with record(f"modifier {name}: eval", job_type="eval", keep=False, announce=False, **part) as rec:
        evaluated = evaluate(EvalRequest.of(own), sub.path, ctx.base, checkpoint)
        # for later phases (lifecycle's paired tests): the logs of its scores and of its base's (maybe cached)
        ctx.notes.setdefault("modifier_logs", {})[name] = {k: evaluated.info.get(k) or [] for k in ("logs", "base_logs")}
        log_eval(
            rec.run,
            {
                "scores": evaluated.scores,
                "base_scores": evaluated.base_scores,
                "eval": {**evaluated.info, "artifact_kind": "modifier"},  # per-sample tables, lineage
                "checkpoint": checkpoint.to_json(),
                "storage": {"persistent_bytes": folder_bytes(sub.path), "temp_peak_bytes": evaluated.temp_peak_bytes},
                "timings": {"train_s": trained["seconds"], "eval_s": evaluated.seconds},
            },
        )
    entry = {
        "name": name,
        "path": str(checkpoint.path.relative_to(ctx.job.path)),
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
    return entry, evaluated.temp_peak_bytes


PHASE = ModifiersPhase()
