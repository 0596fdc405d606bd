"""Training: build torchtune's LoRA recipe config from kit's config and run it.

The recipe is torchtune's own ``lora_finetune_single_device`` (or
``lora_finetune_distributed`` under torchrun); kit only writes its config. That
config is saved as ``torchtune.yaml`` in the job dir, so ``tune run`` can replay
the exact same training outside kit.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.device import resolve_device, resolve_dtype
from kit.core.errors import KitError
from kit.core.metric_logger import JobMetricLogger
from kit.core.models import Family, check_lora_targets, family_of, weight_files

SCRATCH = "torchtune_out"  # torchtune's own output folder inside the job dir


def model_section(cfg: DictConfig, family: Family, base: Path) -> dict:
    lora = cfg.lora
    check_lora_targets(lora, base)
    component, shape = family.lora_builder(base)
    section = {
        "_component_": component,
        "lora_attn_modules": list(lora.attn_modules),
        "apply_lora_to_mlp": bool(lora.apply_to_mlp),
        "apply_lora_to_output": bool(lora.apply_to_output),
        "lora_rank": int(lora.rank),
        "lora_alpha": float(lora.alpha),
        "lora_dropout": float(lora.dropout),
    }
    return {**section, **shape}


def torchtune_config(cfg: DictConfig, base: Path, job_dir: Path, dataset_file: Path) -> dict:
    """The complete torchtune recipe config for this job (plain dict)."""
    family = family_of(base)
    device = resolve_device(cfg.trainer.device)
    dtype = resolve_dtype(cfg.trainer.dtype, device)
    t = cfg.trainer
    out = job_dir / SCRATCH
    return {
        "output_dir": str(out),
        "model": model_section(cfg, family, base),
        # max_seq_len stays unset: with it set, torchtune 0.6.1's tokenizers mask
        # the EOS label of every sample (truncate() forces the last mask entry to
        # True), so the model never learns to stop.
        "tokenizer": family.tokenizer_section(base, None),
        "checkpointer": {
            "_component_": "torchtune.training.FullModelHFCheckpointer",
            "checkpoint_dir": str(base),
            "checkpoint_files": weight_files(base, cfg.model.allow_pickle),
            "recipe_checkpoint": None,
            "output_dir": str(out),
            "model_type": family.model_type,
        },
        "save_adapter_weights_only": cfg.checkpointer.kind == "adapter",
        "resume_from_checkpoint": False,
        "dataset": {
            "_component_": "torchtune.datasets.instruct_dataset",
            "source": "json",
            "data_files": str(dataset_file),
            "split": "train",
            "column_map": {"input": cfg.dataset.prompt_column, "output": cfg.dataset.response_column},
            "train_on_input": False,
            "packed": False,
        },
        "seed": int(t.seed),
        "shuffle": True,
        "batch_size": int(t.batch_size),
        "epochs": int(t.epochs),
        "max_steps_per_epoch": t.max_steps_per_epoch,
        "gradient_accumulation_steps": int(t.gradient_accumulation_steps),
        "optimizer": {
            "_component_": "torch.optim.AdamW",
            "lr": float(t.lr),
            "weight_decay": float(t.weight_decay),
            "fused": device.startswith("cuda"),
        },
        "lr_scheduler": {
            "_component_": "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
            "num_warmup_steps": int(t.warmup_steps),
        },
        "loss": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
        "device": device,
        "dtype": dtype,
        "enable_activation_checkpointing": bool(t.activation_checkpointing),
        "enable_activation_offloading": False,
        "clip_grad_norm": t.clip_grad_norm,
        "compile": bool(t.compile),
        "metric_logger": {
            "_component_": "kit.core.metric_logger.JobMetricLogger",
            "log_dir": str(job_dir),
        },
        "log_every_n_steps": 1,
        "log_peak_memory_stats": device.startswith("cuda"),
        "profiler": {"_component_": "torchtune.training.setup_torch_profiler", "enabled": False},
    }


def write_config(tt_cfg: dict, job_dir: Path) -> Path:
    path = job_dir / "torchtune.yaml"
    OmegaConf.save(OmegaConf.create(tt_cfg), path)
    return path


def recipe_file(name: str) -> Path:
    """Path of a torchtune recipe script. The wheel ships them as a top-level
    ``recipes`` folder whose ``__init__`` refuses imports, so find it without
    importing it."""
    spec = importlib.util.find_spec("recipes")
    if spec is None or not spec.submodule_search_locations:
        raise KitError("torchtune's recipes folder not found; expected torchtune 0.6.1 installed")
    return Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"kit_recipe_{name}", recipe_file(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_before_merge(recipe_module) -> None:
    """Work around torchtune 0.6.1 merging LoRA into the live weights on CPU.

    The recipe builds the full checkpoint from ``{k: v.cpu() ...}``; on CPU
    ``.cpu()`` returns the parameter itself and ``get_merged_lora_ckpt`` adds
    B@A to it in place, so every epoch's save folds the adapter into the base
    being trained (the exported model then holds the sum of all epochs'
    deltas). Merging into copies keeps training and the export correct.
    """
    merge = recipe_module.get_merged_lora_ckpt

    def merge_copies(state_dict, *args, **kwargs):
        return merge({k: v.clone() for k, v in state_dict.items()}, *args, **kwargs)

    recipe_module.get_merged_lora_ckpt = merge_copies


class EpochBars:
    """The recipe's ``tqdm``, one bar at a time.

    torchtune 0.6.1 opens a progress bar per epoch and never closes it, so each new bar is
    drawn one line lower and the terminal gets cursor-up codes (``[A``); closing the
    previous bar when the next one opens keeps one bar per epoch, one line each.
    """

    def __init__(self, tqdm):
        self.tqdm, self.bar = tqdm, None

    def __call__(self, *args, **kwargs):
        self.close()
        self.bar = self.tqdm(*args, **kwargs)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_single_device(tt_cfg: dict, run=None) -> None:
    """Run torchtune's single-device LoRA recipe in this process; its losses also go to ``run`` (W&B)."""
    recipe_module = load_recipe("lora_finetune_single_device")
    if tt_cfg["device"] == "cpu" and not tt_cfg["save_adapter_weights_only"]:
        copy_before_merge(recipe_module)
    bars = recipe_module.tqdm = EpochBars(recipe_module.tqdm)
    cfg = OmegaConf.create(tt_cfg)
    recipe = recipe_module.LoRAFinetuneRecipeSingleDevice(cfg=cfg)
    try:
        recipe.setup(cfg=cfg)
        if isinstance(getattr(recipe, "_metric_logger", None), JobMetricLogger):
            recipe._metric_logger.attach(run)  # torchtune built it from the config; kit owns the run
        recipe.train()
        recipe.cleanup()
    finally:
        bars.close()


def torchrun_command(config_path: Path, nproc: int) -> list[str]:
    """The command for multi-GPU training: torchtune's distributed LoRA recipe under torchrun."""
    recipe = recipe_file("lora_finetune_distributed")
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", str(recipe), "--config", str(config_path),
    ]


def train(cfg: DictConfig, base: Path, job_dir: Path, dataset_file: Path, run=None) -> dict:
    """Train and return {seconds, steps, final_loss, torchtune_config, epoch_dir}; ``run``: the
    phase's W&B run (or None), which receives the loss curve."""
    tt_cfg = torchtune_config(cfg, base, job_dir, dataset_file)
    config_path = write_config(tt_cfg, job_dir)
    start = time.perf_counter()
    nproc = int(cfg.trainer.nproc_per_node)
    if nproc > 1:
        proc = subprocess.run(torchrun_command(config_path, nproc))
        if proc.returncode != 0:
            raise KitError(f"torchrun training exited with status {proc.returncode}")
    else:
        run_single_device(tt_cfg, run)
    seconds = time.perf_counter() - start
    losses = read_losses(job_dir)
    return {
        "seconds": seconds,
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "torchtune_config": str(config_path),
        "epoch_dir": str(last_epoch_dir(job_dir / SCRATCH)),
        "device": tt_cfg["device"],
        "dtype": tt_cfg["dtype"],
    }


def read_losses(job_dir: Path) -> list[float]:
    path = job_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def last_epoch_dir(out: Path) -> Path:
    epochs = sorted(out.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
    if not epochs:
        raise KitError(f"torchtune wrote no epoch_* folder under {str(out)!r}")
    return epochs[-1]
