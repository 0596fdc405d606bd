"""Family table: the torchtune LoRA builder and its arguments come from config.json."""

import importlib
import sys

import pytest

from kit.core.errors import KitError
from kit.core.model.families import FAMILIES, family_of, weight_files
from kit.train.torchrun import torchrun_command

LORA = dict(lora_attn_modules=["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=2, lora_alpha=4)
SMALL = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)


def build(component: str, args: dict):
    module, name = component.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**LORA, **args)


@pytest.mark.parametrize(
    "extra,component",
    [
        ({"rope_theta": 500000.0}, "torchtune.models.llama3.lora_llama3"),
        (
            {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            "torchtune.models.llama3_1.lora_llama3_1",
        ),
        (
            {"rope_theta": 500000.0, "tie_word_embeddings": True, "rope_scaling": {"rope_type": "llama3", "factor": 32.0}},
            "torchtune.models.llama3_2.lora_llama3_2",
        ),
    ],
)
def test_llama_variants_pick_the_right_builder_and_it_accepts_the_args(extra, component):
    got, args = FAMILIES["llama3"].builder({**SMALL, **extra})
    assert got == component
    model = build(got, args)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora" in n) > 0


def test_qwen2_builder_accepts_args_from_the_tiny_model(tiny_base):
    component, args = family_of(tiny_base).lora_builder(tiny_base)
    assert component == "torchtune.models.qwen2.lora_qwen2"
    build(component, args)


def test_unsupported_family_lists_what_is_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    supported = r"\['gemma', 'gemma2', 'llama', 'mistral', 'phi3', 'qwen2', 'qwen3'\]"
    with pytest.raises(KitError, match=rf"'t5'.*expected one of {supported}"):
        family_of(tmp_path)


def test_pickles_refused_unless_allowed(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(KitError, match="allow_pickle"):
        weight_files(tmp_path)
    assert weight_files(tmp_path, allow_pickle=True) == ["pytorch_model.bin"]


def test_torchrun_command_runs_the_distributed_recipe(tmp_path):
    cmd = torchrun_command(tmp_path / "torchtune.yaml", 4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in cmd and cmd[-2:] == ["--config", str(tmp_path / "torchtune.yaml")]
    assert cmd[-4:-2] == ["-m", "kit.train.torchrun"]  # each child: kit.train.torchrun.distributed_main -> torchtune's recipe
    from kit.train.recipes import recipe_file

    assert recipe_file("lora_finetune_distributed").is_file()
