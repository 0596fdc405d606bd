"""The two checkpointers export the same trained model: PEFT applied to the
adapter export reproduces torchtune's merged full export (fp32). This guards
kit's two fixes around torchtune 0.6.1 (kit/train/export.py, kit/train/recipes.py)."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kit.core.config import compose, register_resolvers
from kit.core.model.loader import load_model


@pytest.fixture(scope="module")
def full_run(tiny_base, tmp_path_factory):
    from kit.train.run import train

    register_resolvers()
    job = tmp_path_factory.mktemp("full_run")
    cfg = compose("train", ["checkpointer=full", "trainer.epochs=1", "trainer.max_steps_per_epoch=8"])
    OmegaConf.resolve(cfg)
    result = train(cfg, tiny_base, job, Path(cfg.dataset.train_file))
    return job, Path(result["epoch_dir"])


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_peft_adapter_matches_torchtune_full_export(full_run, tiny_base):
    from peft import PeftModel

    from kit.train.export import export_adapter, export_full

    job, epoch_dir = full_run
    full = load_model(export_full(epoch_dir, job))
    base = load_model(tiny_base)
    merged = PeftModel.from_pretrained(base, export_adapter(epoch_dir, job, tiny_base)).merge_and_unload()
    ids = torch.tensor([[283, 275, 198, 261, 220, 22, 17, 18, 15, 262, 263, 264, 30, 281, 198, 283, 280, 198]])
    diff = (logits(full, ids) - logits(merged, ids)).abs().max().item()
    assert diff < 1e-4, f"PEFT(adapter) vs torchtune full export: max |logit diff| {diff}"
    # and the training really moved the model
    assert (logits(full, ids) - logits(load_model(tiny_base), ids)).abs().max() > 1e-2


def test_full_export_has_no_adapter_files(full_run):
    job, _ = full_run
    names = {p.name for p in (job / "hf_model").iterdir()}
    assert "config.json" in names and not names & {"adapter_config.json", "adapter_model.safetensors"}
