"""Llama 2 and its derivatives (TinyLlama, Vicuna...): model_type ``llama``, untied embeddings, no RoPE
scaling, rope_theta 10000 (``lora_llama2`` takes no other base; any other Llama config goes the
Llama 3 path, whose builders take it).

Where it differs from the Llama 3 path: torchtune's ``lora_llama2`` builder and ``LLAMA2`` checkpointer
type (the same layers and the same HF <-> torchtune conversion as Llama 3), and the tokenizer: Llama 2's
is a SentencePiece model, and torchtune's ``llama2_tokenizer`` formats chats with its own ``[INST]``
template, not the checkpoint's chat template, so kit trains through the folder's HF tokenizer and its
chat template (or kit's plain format for a base model), exactly what the eval renders.
"""

from __future__ import annotations

from kit.core.model.families._family import Family, common_args, refuse_own_head_dim, refuse_rope_scaling, rope_type

LLAMA2_ROPE_THETA = 10000.0  # fixed in torchtune's lora_llama2


def accepts(c: dict) -> bool:
    untied = not c.get("tie_word_embeddings", False)
    return untied and rope_type(c) is None and float(c.get("rope_theta", LLAMA2_ROPE_THETA)) == LLAMA2_ROPE_THETA


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Llama 2")
    refuse_own_head_dim(c, "Llama 2")
    args = common_args(c)
    del args["rope_base"]  # lora_llama2 has no such argument: always 10000
    return "torchtune.models.llama2.lora_llama2", args


FAMILY = Family(
    name="llama2",
    hf_model_types=("llama",),
    model_type="LLAMA2",
    builder=builder,
    hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
    tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
    what="Llama 2 and derivatives (model_type llama, untied, no rope scaling, rope_theta 10000; torchtune lora_llama2)",
    accepts=accepts,
)
