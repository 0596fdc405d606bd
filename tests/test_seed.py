"""``trainer.seed`` is a whole seed: it decides the data order as well as the LoRA init.

torchtune 0.6.1's single-device recipe builds its sampler with seed 0 whatever the config
says (kit.train.recipes.seed_data_order undoes that). Set up torchtune's own recipe on the
tiny model (no training step) and read the order its data loader would serve.
"""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kit.core.config import compose


def recipe_order(tiny_base: Path, job: Path, seed: int) -> tuple[list[int], float]:
    """(first epoch's sample order, first LoRA A element) of the recipe set up for ``seed``."""
    from kit.train.recipe_config import torchtune_config
    from kit.train.recipes import single_device_recipe

    cfg = compose("train", [f"trainer.seed={seed}", "trainer.dtype=fp32", "logger=none"])
    OmegaConf.resolve(cfg)
    recipe = single_device_recipe(torchtune_config(cfg, tiny_base, job, Path(cfg.dataset.train_file)))
    sampler = recipe._dataloader.sampler
    sampler.set_epoch(0)
    lora_a = next(p for n, p in recipe._model.named_parameters() if "lora_a" in n)
    return list(iter(sampler)), float(lora_a.detach().flatten()[0])


@pytest.fixture(scope="module")
def orders(tiny_base, tmp_path_factory):
    return {seed: recipe_order(tiny_base, tmp_path_factory.mktemp(f"seed{seed}"), seed) for seed in (0, 1)}


def test_another_seed_gives_another_data_order_and_init(orders):
    (order0, init0), (order1, init1) = orders[0], orders[1]
    assert sorted(order0) == sorted(order1)  # the same samples ...
    assert order0 != order1  # ... in another order
    assert init0 != init1


def test_the_same_seed_gives_the_same_order(orders, tiny_base, tmp_path):
    assert recipe_order(tiny_base, tmp_path, 1) == orders[1]


def test_seed_0_keeps_torchtunes_own_order(orders):
    """Seed 0 is torchtune's sampler seed: jobs trained before kit seeded the data keep their order."""
    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    order0, _ = orders[0]
    own = StatefulDistributedSampler(range(len(order0)), num_replicas=1, rank=0, shuffle=True, seed=0)
    own.set_epoch(0)
    assert list(iter(own)) == order0
