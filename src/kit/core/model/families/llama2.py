"""Llama 2 and its derivatives (TinyLlama, Vicuna...): model_type ``llama``, untied embeddings, no RoPE
scaling, rope_theta below Llama 3's 500000.

Where it differs from the Llama 3 path: torchtune's ``lora_llama2`` builder and ``LLAMA2`` checkpointer
type (the same layers and the same HF <-> torchtune conversion as Llama 3), and the tokenizer: Llama 2's
is a SentencePiece model, and torchtune's ``llama2_tokenizer`` formats chats with its own ``[INST]``
template, not the checkpoint's chat template, so kit trains through the folder's HF tokenizer and its
chat template (or kit's plain format for a base model), exactly what the eval renders.
"""

from __future__ import annotations

from kit.core.model.families._family import Family, common_args, refuse_own_head_dim, refuse_rope_scaling, rope_type

LLAMA3_ROPE_THETA = 500000.0


def accepts(c: dict) -> bool:
    untied = not c.get("tie_word_embeddings", False)
    return untied and rope_type(c) is None and float(c.get("rope_theta", 10000.0)) < LLAMA3_ROPE_THETA


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Llama 2")
    refuse_own_head_dim(c, "Llama 2")
    return "torchtune.models.llama2.lora_llama2", common_args(c)


FAMILY = Family(
    name="llama2",
    hf_model_types=("llama",),
    model_type="LLAMA2",
    builder=builder,
    hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
    tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
    what="Llama 2 and derivatives (model_type llama, untied, rope_theta < 500000; torchtune lora_llama2)",
    accepts=accepts,
)
