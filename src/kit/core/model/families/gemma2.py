"""Gemma 2: torchtune's ``lora_gemma2`` layers (attention soft-capping, sliding window on every other
layer, four norms per layer, ``query_pre_attn_scalar``) with two torchtune 0.6.1 defects fixed:

- the final soft-capping is moved onto the logits, where Hugging Face applies it
  (kit.core.model.torchtune_builders.lora_gemma2);
- torchtune's Gemma 2 key table (``gemma2._convert_weights._GEMMA2_FROM_HF``) swaps the two MLP
  norms: HF's ``pre_feedforward_layernorm`` (before the MLP) goes to ``mlp_scale`` (applied after
  it) and ``post_feedforward_layernorm`` to ``mlp_norm``. Its inverse swaps them back, so a round
  trip is exact and only the logits show it. ``fix_norm_keys`` corrects the table (kit's
  conversions and the recipe's checkpointer, ``Gemma2HFCheckpointer``, both use it).

Hugging Face applies attention soft-capping only in its eager attention (transformers 4.57 loads
Gemma 2 with sdpa by default, which leaves the capping out), so every kit load of a Gemma 2 model
asks for ``attn_implementation="eager"`` (``Family.load_args``).
"""

from __future__ import annotations

from kit.core.model.families._family import Family, common_args, head_dim, refuse_rope_scaling
from kit.core.model.families.gemma import gelu

MLP_NORMS = {  # HF name -> the torchtune norm that sits where HF applies it
    "model.layers.{}.pre_feedforward_layernorm.weight": "layers.{}.mlp_norm.scale",
    "model.layers.{}.post_feedforward_layernorm.weight": "layers.{}.mlp_scale.scale",
}


def fix_norm_keys() -> None:
    from torchtune.models.gemma2 import _convert_weights

    _convert_weights._GEMMA2_FROM_HF.update(MLP_NORMS)


def gemma2_hf_to_tune(state_dict: dict, **args) -> dict:
    from torchtune.models.gemma2._convert_weights import gemma2_hf_to_tune as tune_fn

    fix_norm_keys()
    return tune_fn(state_dict, **args)


def gemma2_tune_to_hf(state_dict: dict, **args) -> dict:
    from torchtune.models.gemma2._convert_weights import gemma2_tune_to_hf as tune_fn

    fix_norm_keys()
    return tune_fn(state_dict, **args)


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Gemma 2")
    args = common_args(c)
    args.update(
        head_dim=head_dim(c),
        rope_base=int(args["rope_base"]),
        hidden_capping_value=c.get("attn_logit_softcapping"),
        final_capping_value=c.get("final_logit_softcapping"),
        sliding_window_size=c.get("sliding_window") or 4096,
        query_pre_attn_scalar=c.get("query_pre_attn_scalar"),
        gelu_approximate=gelu(c.get("hidden_activation", "gelu_pytorch_tanh"), "hidden_activation"),
    )
    return "kit.core.model.torchtune_builders.lora_gemma2", args


FAMILY = Family(
    name="gemma2",
    hf_model_types=("gemma2",),
    model_type="GEMMA2",
    builder=builder,
    hf_to_tune_fn=gemma2_hf_to_tune,
    tune_to_hf_fn=gemma2_tune_to_hf,
    what="Gemma 2 2B/9B (torchtune lora_gemma2 + kit's fixes: logit soft-capping, MLP norm keys; tied; HF eager attention)",
    tied_default=True,
    output_lora=False,
    attn_implementation="eager",
    checkpointer="kit.core.model.torchtune_checkpointer.Gemma2HFCheckpointer",
)
