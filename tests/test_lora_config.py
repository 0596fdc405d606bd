"""One comparison of a saved adapter_config.json against what torchtune.yaml trained, for
``kit eval``'s first check and ``kit verify``'s adapter_folder check: every LoRA setting that
changes the model, PEFT's default where the file leaves one out."""

import pytest
from omegaconf import OmegaConf

from kit.core.model.families import FAMILIES
from kit.eval import checks
from kit.verify import adapter_folder

SECTION = {
    "_component_": "torchtune.models.qwen2.lora_qwen2",
    "lora_attn_modules": ["q_proj", "k_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "apply_lora_to_output": False,
    "lora_rank": 8,
    "lora_alpha": 16.0,
}
SAVED = {
    "r": 8,
    "lora_alpha": 16.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"],
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
}


QWEN2 = FAMILIES["qwen2"]


def test_what_torchtune_writes_matches():
    assert checks.lora_config_problems(SAVED, SECTION, QWEN2)[2] == []
    assert checks.lora_config_problems({**SAVED, "rank_pattern": {}, "layers_to_transform": []}, SECTION, QWEN2)[2] == []


@pytest.mark.parametrize(
    "key,value",
    [
        ("use_rslora", True),
        ("use_dora", True),
        ("layers_to_transform", [0]),
        ("layers_pattern", "layers"),
        ("rank_pattern", {"q_proj": 4}),
        ("alpha_pattern", {"q_proj": 4.0}),
        ("bias", "all"),
        ("modules_to_save", ["lm_head"]),
        ("exclude_modules", ["q_proj"]),
        ("lora_bias", True),
        ("fan_in_fan_out", True),
        ("r", 4),
        ("lora_alpha", 8.0),
        ("target_modules", ["q_proj"]),
    ],
)
def test_every_setting_that_changes_the_model_is_compared(tmp_path, key, value):
    OmegaConf.save(OmegaConf.create({"model": SECTION}), tmp_path / "torchtune.yaml")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')  # the base's family: qwen2
    problems = checks.vs_torchtune({**SAVED, key: value}, tmp_path, tmp_path)  # kit eval's first check
    assert len(problems) == 1 and problems[0].startswith(f"{key}="), problems
    assert adapter_folder.lora_config_problems is checks.lora_config_problems  # kit verify: the same function
