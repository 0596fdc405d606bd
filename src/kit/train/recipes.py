"""torchtune's LoRA recipes, loaded from its wheel and patched where torchtune 0.6.1 is wrong for kit.

The recipe is torchtune's own ``lora_finetune_single_device``; kit only writes its config
(kit.train.recipe_config) and fixes what the comments below name.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from kit.core.errors import KitError
from kit.core.model.qlora import is_qlora
from kit.train.recipe_config import ADAPTER_DTYPE


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


# Apart by more than any run's epochs: the sampler orders epoch e with seed + e, so seeds
# 0 and 1 would otherwise share all but one epoch's order (shifted by one epoch).
DATA_ORDER_STRIDE = 2**20


def data_order_seed(seed: int) -> int:
    """The sampler seed for ``trainer.seed``: seed 0 keeps torchtune's own order."""
    return int(seed) * DATA_ORDER_STRIDE


def seed_data_order(recipe_module, seed: int) -> None:
    """Make ``seed`` decide the data order too, not only the LoRA init.

    torchtune 0.6.1's recipes build their ``StatefulDistributedSampler`` with seed 0
    (single device: ``seed=0`` written out; distributed: the default), whatever the
    config's ``seed``: every run saw the same batches in the same order. Every rank
    gets the same sampler seed, so the ranks still split one permutation.
    """
    sampler = recipe_module.StatefulDistributedSampler

    def seeded_sampler(*args, **kwargs):
        return sampler(*args, **{**kwargs, "seed": data_order_seed(seed)})

    recipe_module.StatefulDistributedSampler = seeded_sampler


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


def with_nf4_check(recipe_class):
    """The single-device recipe on an ``nf4`` base: after it builds the QLoRA model and loads the
    base into it, every NF4 weight must compute with exactly the loaded ``dequant(Wq)``
    (kit.core.model.qlora.check_trains_on), or training stops before its first step."""

    class Recipe(recipe_class):
        def _setup_model(self, *args, **kwargs):
            from kit.core.model.qlora import check_trains_on

            model = super()._setup_model(*args, **kwargs)
            check_trains_on(model, kwargs["base_model_state_dict"])
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
    seed_data_order(recipe_module, tt_cfg["seed"])
    if tt_cfg["device"] == "cpu" and not tt_cfg["save_adapter_weights_only"]:
        copy_before_merge(recipe_module)
    if bars is not None:
        bars.tqdm, recipe_module.tqdm = recipe_module.tqdm, bars  # the module is loaded afresh per run
    cfg = OmegaConf.create(tt_cfg)
    recipe_class = recipe_module.LoRAFinetuneRecipeSingleDevice
    if tt_cfg[ADAPTER_DTYPE] != tt_cfg["dtype"]:
        recipe_class = with_fp32_lora(recipe_class)
    if is_qlora(tt_cfg["model"]):
        recipe_class = with_nf4_check(recipe_class)
    recipe = recipe_class(cfg=cfg)
    with no_dataset_bars():
        recipe.setup(cfg=cfg)
    from kit.train.metric_logger import JobMetricLogger  # imports torchtune: only when training

    if isinstance(getattr(recipe, "_metric_logger", None), JobMetricLogger):
        recipe._metric_logger.attach(run)  # torchtune built it from the config; kit owns the run
    return recipe
