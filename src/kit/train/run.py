"""Train one LoRA: write the recipe config, run torchtune (in process, or under torchrun), read the losses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from omegaconf import DictConfig

from kit.core import threads
from kit.core.errors import KitError
from kit.core.jobdir import JobDir, as_job
from kit.core.model import prompt_format
from kit.train.recipe_config import ADAPTER_DTYPE, METRICS, SCRATCH, TORCHTUNE_YAML, torchtune_config, write_config
from kit.train.recipes import run_single_device
from kit.train.torchrun import torchrun_command, torchrun_env


def train(cfg: DictConfig, base: Path, job_dir: JobDir | Path, dataset_file: Path, run=None) -> dict:
    """Train and return {seconds, steps, final_loss, torchtune_config, epoch_dir, threads, ...};
    ``run``: the phase's W&B run (or None), which receives the loss curve."""
    job = as_job(job_dir)
    for name in (SCRATCH, TORCHTUNE_YAML, METRICS):  # recorded before torchtune writes them (set_aside moves them)
        job.output(name)
    tt_cfg = torchtune_config(cfg, base, job.path, dataset_file)
    config_path = write_config(tt_cfg, job.path)
    choice = threads.choose(os.environ)
    start = time.perf_counter()
    nproc = int(cfg.trainer.nproc_per_node)
    if nproc > 1:
        proc = subprocess.run(torchrun_command(config_path, nproc), env=torchrun_env(choice, nproc))
        if proc.returncode != 0:
            raise KitError(f"torchrun training exited with status {proc.returncode}")
    else:
        threads.apply(choice)
        run_single_device(tt_cfg, run)
    seconds = time.perf_counter() - start
    losses = read_losses(job.path)
    return {
        "seconds": seconds,
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "torchtune_config": str(config_path),
        "epoch_dir": str(last_epoch_dir(job.path / SCRATCH)),
        "device": tt_cfg["device"],
        "dtype": tt_cfg["dtype"],
        "adapter_dtype": tt_cfg[ADAPTER_DTYPE],
        # the prompt format trained on: the eval renders the same (kit.core.model.prompt_format)
        "prompt_format": prompt_format.record(base, tt_cfg["tokenizer"]["_component_"]),
        "threads": {**choice.as_dict(), "per_process": threads.per_process(choice, nproc), "processes": nproc},
    }


def loss_line(trained: dict) -> str | None:
    """``248 steps, loss 6.204 -> 0.023`` for a training's progress line (None: no losses logged)."""
    if trained.get("final_loss") is None:
        return None
    return f"{trained['steps']} steps, loss {trained['first_loss']:.3f} -> {trained['final_loss']:.3f}"


def read_losses(job_dir: Path) -> list[float]:
    path = job_dir / METRICS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def last_epoch_dir(out: Path) -> Path:
    epochs = sorted(out.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
    if not epochs:
        raise KitError(f"torchtune wrote no epoch_* folder under {str(out)!r}")
    return epochs[-1]
