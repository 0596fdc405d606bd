"""Gemma (1): torchtune's ``lora_gemma`` layers: embeddings scaled by sqrt(hidden), RMSNorm as
``x * (1 + weight)``, a GELU MLP, a tied output layer (no LoRA on it), its own head_dim.

transformers 4.57 computes Gemma's MLP activation from ``hidden_act`` (``gelu``: exact GELU in
google/gemma-2b's config) while torchtune always uses the tanh approximation, so kit's builder
(kit.core.model.torchtune_builders.lora_gemma) sets the activation config.json names.
"""

from __future__ import annotations

from kit.core.errors import KitError
from kit.core.model.families._family import Family, common_args, head_dim, refuse_rope_scaling

GELU_APPROXIMATION = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}


def gelu(name: str | None, key: str) -> str:
    if name not in GELU_APPROXIMATION:
        raise KitError(
            f"{key} {name!r} in config.json is not supported for Gemma models; expected one of {sorted(GELU_APPROXIMATION)}"
        )
    return GELU_APPROXIMATION[name]


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Gemma")
    args = common_args(c)
    args["head_dim"] = head_dim(c)
    args["rope_base"] = int(args["rope_base"])
    args["gelu_approximate"] = gelu(c.get("hidden_act", "gelu_pytorch_tanh"), "hidden_act")
    return "kit.core.model.torchtune_builders.lora_gemma", args


FAMILY = Family(
    name="gemma",
    hf_model_types=("gemma",),
    model_type="GEMMA",
    builder=builder,
    hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
    tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
    what="Gemma 2B/7B (torchtune lora_gemma layers, HF's activation; always tied: no LoRA on the output layer)",
    tied_default=True,
    output_lora=False,
)
