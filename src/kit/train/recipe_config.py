"""The torchtune recipe config of a job, built from kit's config.

Saved as ``<job>/torchtune.yaml``, so ``tune run lora_finetune_single_device --config <job>/torchtune.yaml``
replays the exact training outside kit.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.device import resolve_device, resolve_dtype
from kit.core.model.families import Family, check_lora_targets, family_of, weight_files

SCRATCH = "torchtune_out"  # torchtune's own output folder inside the job dir
METRICS = "metrics.jsonl"  # <job>/metrics.jsonl: one JSON line per logged step (kit.train.metric_logger)
TORCHTUNE_YAML = "torchtune.yaml"  # the recipe config: `tune run <recipe> --config <job>/torchtune.yaml` replays it
# kit's own key in torchtune.yaml (torchtune ignores it): the LoRA weights' dtype, read by
# kit's recipe runners here and in the torchrun children (``python -m kit.train.training``).
ADAPTER_DTYPE = "kit_adapter_dtype"


def resolve_adapter_dtype(choice, dtype: str) -> str:
    """fp32 LoRA weights under lower-precision training unless the user asked for ``same``.

    torchtune 0.6.1's LoRA recipes build the whole model, LoRA included, in
    ``dtype``, so AdamW's state is bf16 too, and late in training (small
    learning rate, grown weights) most bf16 updates round to nothing: measured
    on the default job in bf16, 87%, 93% and 97% of the LoRA elements were left
    unchanged by each step of epochs 2, 3 and 4 (fp32 LoRA: 0-1%).
    """
    return dtype if str(getattr(choice, "value", choice)) == "same" else "fp32"


def model_section(cfg: DictConfig, family: Family, base: Path) -> dict:
    """The recipe's ``model``: the family's LoRA builder, or on an ``nf4`` base (a dequantized
    ``phase=compress`` folder) kit's QLoRA builder around it (kit.core.model.qlora)."""
    from kit.core.model.qlora import BUILDER, nf4_settings

    check_lora_targets(cfg.lora, base)
    component, shape = family.lora_builder(base)
    nf4 = nf4_settings(base)
    if nf4 is not None:
        return {"_component_": BUILDER, "lora_builder": component, **nf4, **family.lora_section(cfg.lora), **shape}
    return {"_component_": component, **family.lora_section(cfg.lora), **shape}


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
            "_component_": family.checkpointer,
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
        ADAPTER_DTYPE: resolve_adapter_dtype(t.adapter_dtype, dtype),
        "enable_activation_checkpointing": bool(t.activation_checkpointing),
        "enable_activation_offloading": False,
        "clip_grad_norm": t.clip_grad_norm,
        "compile": bool(t.compile),
        "metric_logger": {
            "_component_": "kit.train.metric_logger.JobMetricLogger",
            "log_dir": str(job_dir),
        },
        "log_every_n_steps": 1,
        "log_peak_memory_stats": device.startswith("cuda"),
        "profiler": {"_component_": "torchtune.training.setup_torch_profiler", "enabled": False},
    }


def write_config(tt_cfg: dict, job_dir: Path) -> Path:
    path = job_dir / TORCHTUNE_YAML
    OmegaConf.save(OmegaConf.create(tt_cfg), path)
    return path
