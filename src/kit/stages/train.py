"""Training: build torchtune's LoRA recipe config from kit's config and run it.

The recipe is torchtune's own ``lora_finetune_single_device`` (or
``lora_finetune_distributed`` under torchrun); kit only writes its config. That
config is saved as ``torchtune.yaml`` in the job dir, so ``tune run`` can replay
the exact same training outside kit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core import threads
from kit.core.device import resolve_device, resolve_dtype
from kit.core.errors import KitError
from kit.core.metric_logger import JobMetricLogger
from kit.core.models import Family, check_lora_targets, family_of, weight_files

SCRATCH = "torchtune_out"  # torchtune's own output folder inside the job dir
# kit's own key in torchtune.yaml (torchtune ignores it): the LoRA weights' dtype, read by
# kit's recipe runners here and in the torchrun children (``python -m kit.stages.train``).
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
        ADAPTER_DTYPE: resolve_adapter_dtype(t.adapter_dtype, dtype),
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


def fp32_lora_forward(self, x):
    """``nn.Linear.forward`` of a LoRA matrix kept in fp32 while activations are bf16:
    the product runs in the activations' dtype, its gradient flows back through the
    cast into the fp32 weight, and AdamW updates that fp32 weight (fp32 state)."""
    import torch.nn.functional as F

    bias = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, self.weight.to(x.dtype), bias)


def keep_lora_fp32(model) -> int:
    """Cast every LoRA matrix of a torchtune model to fp32 in place (the frozen base
    keeps its dtype) and make it compute in the activations' dtype. Returns how many."""
    import types

    import torch
    from torchtune.modules.peft import LoRALinear

    count = 0
    for module in model.modules():
        if isinstance(module, LoRALinear):
            for linear in (module.lora_a, module.lora_b):
                # .to() swaps param.data: the Parameter objects the recipe holds stay the same
                linear.to(torch.float32)
                linear.forward = types.MethodType(fp32_lora_forward, linear)
                count += 1
    return count


def with_fp32_lora(recipe_class):
    """The single-device recipe with fp32 LoRA weights: cast right after it builds the
    model (after its own check that LoRA is in ``dtype``), before it makes the
    optimizer, so AdamW's state is fp32 too. Checkpoints then hold fp32 adapters."""

    class Recipe(recipe_class):
        def _setup_model(self, *args, **kwargs):
            model = super()._setup_model(*args, **kwargs)
            if keep_lora_fp32(model) == 0:
                raise KitError(
                    "trainer.adapter_dtype=fp32 found no LoRA layer to keep in fp32; "
                    "expected torchtune LoRALinear modules (or set trainer.adapter_dtype=same)"
                )
            return model

    return Recipe


def run_single_device(tt_cfg: dict, run=None) -> None:
    """Run torchtune's single-device LoRA recipe in this process; its losses also go to ``run`` (W&B)."""
    bars = EpochBars(None)
    try:
        recipe = single_device_recipe(tt_cfg, run, bars)
        recipe.train()
        recipe.cleanup()
    finally:
        bars.close()


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


@contextlib.contextmanager
def no_dataset_bars():
    """``datasets`` draws a "Generating train split" bar the first time it reads a data file
    (a cold cache: every CI run, every new machine); kit's own progress line covers it."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def single_device_recipe(tt_cfg: dict, run=None, bars: EpochBars | None = None):
    """torchtune's single-device LoRA recipe, set up (model, optimizer, data) for ``tt_cfg``;
    its losses also go to ``run`` (W&B), its progress bars through ``bars``."""
    recipe_module = load_recipe("lora_finetune_single_device")
    if tt_cfg["device"] == "cpu" and not tt_cfg["save_adapter_weights_only"]:
        copy_before_merge(recipe_module)
    if bars is not None:
        bars.tqdm, recipe_module.tqdm = recipe_module.tqdm, bars  # the module is loaded afresh per run
    cfg = OmegaConf.create(tt_cfg)
    recipe_class = recipe_module.LoRAFinetuneRecipeSingleDevice
    if tt_cfg[ADAPTER_DTYPE] != tt_cfg["dtype"]:
        recipe_class = with_fp32_lora(recipe_class)
    recipe = recipe_class(cfg=cfg)
    with no_dataset_bars():
        recipe.setup(cfg=cfg)
    if isinstance(getattr(recipe, "_metric_logger", None), JobMetricLogger):
        recipe._metric_logger.attach(run)  # torchtune built it from the config; kit owns the run
    return recipe


def torchrun_command(config_path: Path, nproc: int) -> list[str]:
    """The command for multi-process training: torchtune's distributed LoRA recipe under
    torchrun, each child started through ``python -m kit.stages.train`` (``distributed_main``)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "kit.stages.train",
        "--config",
        str(config_path),
    ]


class RecipeTraining:
    """torchtune's ``training`` module as kit's distributed recipe sees it.

    On CPU: torchtune 0.6.1's ``lora_finetune_distributed`` calls, on every run,
    ``training.get_memory_stats`` (raises "Logging memory stats is not supported
    on CPU devices") and ``training.cleanup_before_training`` (calls
    ``torch.cpu.empty_cache``, which does not exist). Both only report or free
    accelerator memory, so on CPU they do nothing here.

    fp32 LoRA: the recipe builds the model on the meta device and shards it with
    ``training.shard_model``; the LoRA matrices are cast to fp32 just before, so
    FSDP2 shards them (and AdamW's state) in fp32 beside the bf16 base (FSDP2
    needs one dtype among the trainable parameters only, and all LoRA is fp32).
    """

    def __init__(self, real, cpu: bool, fp32_lora: bool):
        self._real, self._cpu, self._fp32_lora = real, cpu, fp32_lora

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_memory_stats(self, device=None):
        return {} if self._cpu else self._real.get_memory_stats(device=device)

    def log_memory_stats(self, *args, **kwargs):
        return None if self._cpu else self._real.log_memory_stats(*args, **kwargs)

    def cleanup_before_training(self):
        return None if self._cpu else self._real.cleanup_before_training()

    def shard_model(self, model, *args, **kwargs):
        if self._fp32_lora and keep_lora_fp32(model) == 0:
            raise KitError(
                "trainer.adapter_dtype=fp32 found no LoRA layer to keep in fp32; "
                "expected torchtune LoRALinear modules (or set trainer.adapter_dtype=same)"
            )
        return self._real.shard_model(model, *args, **kwargs)


def gloo_process_group(*args, **kwargs):
    """The recipe's ``init_process_group("cuda:nccl,cpu:gloo")`` fails on a torch built
    without NCCL (the CPU wheel: "Distributed package doesn't have NCCL built in"); on
    CPU everything goes over gloo."""
    import torch.distributed as dist

    kwargs.pop("backend", None)
    return dist.init_process_group("gloo", **kwargs)


def config_arg(argv: list[str]) -> Path:
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        raise KitError(f"expected --config <torchtune.yaml> in {argv}")
    return Path(argv[argv.index("--config") + 1])


def distributed_main(argv: list[str]) -> None:
    """One torchrun child: torchtune's distributed LoRA recipe, made to run on CPU too."""
    tt_cfg = OmegaConf.load(config_arg(argv))
    module = load_recipe("lora_finetune_distributed")
    cpu = tt_cfg.device == "cpu"
    if cpu:
        module.init_process_group = gloo_process_group
    fp32_lora = tt_cfg.get(ADAPTER_DTYPE, tt_cfg.dtype) != tt_cfg.dtype
    module.training = RecipeTraining(module.training, cpu=cpu, fp32_lora=fp32_lora)
    module.recipe_main()


def torchrun_env(choice: threads.ThreadChoice, nproc: int) -> dict:
    """The children share the job's cores: each gets its share of the threads (and, like
    the single-device run, no "Generating train split" bar from ``datasets``)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads.per_process(choice, nproc)),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }


def train(cfg: DictConfig, base: Path, job_dir: Path, dataset_file: Path, run=None) -> dict:
    """Train and return {seconds, steps, final_loss, torchtune_config, epoch_dir, threads, ...};
    ``run``: the phase's W&B run (or None), which receives the loss curve."""
    tt_cfg = torchtune_config(cfg, base, job_dir, dataset_file)
    config_path = write_config(tt_cfg, job_dir)
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
        "adapter_dtype": tt_cfg[ADAPTER_DTYPE],
        "threads": {**choice.as_dict(), "per_process": threads.per_process(choice, nproc), "processes": nproc},
    }


def loss_line(trained: dict) -> str | None:
    """``248 steps, loss 6.204 -> 0.023`` for a training's progress line (None: no losses logged)."""
    if trained.get("final_loss") is None:
        return None
    return f"{trained['steps']} steps, loss {trained['first_loss']:.3f} -> {trained['final_loss']:.3f}"


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


if __name__ == "__main__":  # a torchrun child (torchrun_command)
    distributed_main(sys.argv[1:])
