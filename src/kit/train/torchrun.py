"""Multi-process training: torchtune's ``lora_finetune_distributed`` under torchrun.

Each child is ``python -m kit.train.torchrun --config <job>/torchtune.yaml``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from kit.core import threads
from kit.core.errors import KitError
from kit.train.recipe_config import ADAPTER_DTYPE
from kit.train.recipes import keep_lora_fp32, load_recipe, seed_data_order


def torchrun_command(config_path: Path, nproc: int) -> list[str]:
    """The command for multi-process training: torchtune's distributed LoRA recipe under
    torchrun, each child started through ``python -m kit.train.torchrun`` (``distributed_main``)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "kit.train.torchrun",
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
    seed_data_order(module, tt_cfg.seed)
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


if __name__ == "__main__":  # a torchrun child (torchrun_command)
    distributed_main(sys.argv[1:])
