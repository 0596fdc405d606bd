"""Qwen3 (dense: 0.6B-32B), which torchtune 0.6.1 lacks: kit's ``lora_qwen3`` on torchtune's modules
(kit.core.model.torchtune_builders): per-head q/k RMSNorm before RoPE, a head_dim of its own, no
q/k/v bias. Its weights convert with torchtune's Qwen2 mapping plus the two q/k norms
(``qwen3_hf_to_tune``), so the recipe's checkpointer is kit's ``Qwen3HFCheckpointer``.
"""

from __future__ import annotations

from kit.core.errors import KitError
from kit.core.model.families._family import Family, common_args, head_dim, refuse_rope_scaling, standard_conversion_args

NORMS = {  # HF name -> torchtune name, the keys Qwen3 adds to Qwen2's
    "model.layers.{}.self_attn.q_norm.weight": "layers.{}.attn.q_norm.scale",
    "model.layers.{}.self_attn.k_norm.weight": "layers.{}.attn.k_norm.scale",
}


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Qwen3")
    if c.get("use_sliding_window"):
        raise KitError("use_sliding_window=true in config.json is not supported for Qwen3 models; expected false")
    if c.get("attention_bias"):
        raise KitError("attention_bias=true in config.json is not supported for Qwen3 models; expected false")
    args = {**common_args(c), "head_dim": head_dim(c), "tie_word_embeddings": FAMILY.tied(c)}
    return "kit.core.model.torchtune_builders.lora_qwen3", args


def conversion_args(c: dict) -> dict:
    return {**standard_conversion_args(c), "tie_word_embeddings": FAMILY.tied(c)}


def with_norm_keys() -> None:
    """torchtune's Qwen2 key table, plus Qwen3's q/k norms (keys no Qwen2 checkpoint has: Qwen2 is unchanged)."""
    from torchtune.models.qwen2 import _convert_weights

    for hf, tune in NORMS.items():
        _convert_weights._FROM_HF.setdefault(hf, tune)


def qwen3_hf_to_tune(state_dict: dict, **args) -> dict:
    from torchtune.models.qwen2._convert_weights import qwen2_hf_to_tune

    with_norm_keys()
    return qwen2_hf_to_tune(state_dict, **args)


def qwen3_tune_to_hf(state_dict: dict, **args) -> dict:
    from torchtune.models.qwen2._convert_weights import qwen2_tune_to_hf

    with_norm_keys()
    return qwen2_tune_to_hf(state_dict, **args)


FAMILY = Family(
    name="qwen3",
    hf_model_types=("qwen3",),
    model_type="QWEN2",
    builder=builder,
    hf_to_tune_fn=qwen3_hf_to_tune,
    tune_to_hf_fn=qwen3_tune_to_hf,
    what="Qwen3 dense (kit's lora_qwen3 on torchtune modules: q/k norms before RoPE, own head_dim; tied below 8B)",
    hf_weights_permuted=False,
    conversion_args=conversion_args,
    checkpointer="kit.core.model.torchtune_checkpointer.Qwen3HFCheckpointer",
)
