"""Mistral 7B (v0.1-v0.3, base and instruct): torchtune's ``lora_mistral``.

torchtune's Mistral has no sliding-window attention; Mistral v0.1's 4096-token window (v0.2 and
v0.3 have none) changes nothing for sequences up to 4096 tokens. Its builder derives head_dim from
hidden_size / heads: a config with another head_dim (Mistral-Nemo) is refused.
"""

from __future__ import annotations

from kit.core.model.families._family import Family, common_args, refuse_own_head_dim, refuse_rope_scaling


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Mistral")
    refuse_own_head_dim(c, "Mistral")
    args = common_args(c)
    args["rope_base"] = int(args["rope_base"])
    return "torchtune.models.mistral.lora_mistral", args


FAMILY = Family(
    name="mistral",
    hf_model_types=("mistral",),
    model_type="MISTRAL",
    builder=builder,
    hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
    tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
    what="Mistral 7B v0.1-v0.3 (torchtune lora_mistral; no sliding window: exact up to 4096 tokens)",
)
