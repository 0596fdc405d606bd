"""Llama 3 / 3.1 / 3.2, and Llama-architecture models with tied embeddings and plain RoPE (SmolLM2)."""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.families._family import Family, common_args, refuse_own_head_dim, refuse_rope_scaling, rope_type

# torchtune's Llama3ScaledRoPE takes the scale factor only; these are fixed in its builders
TORCHTUNE_SCALING = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def refuse_other_scaling(c: dict) -> None:
    scaling = c.get("rope_scaling") or {}
    for key, fixed in TORCHTUNE_SCALING.items():
        if key in scaling and float(scaling[key]) != fixed:
            raise KitError(
                f"rope_scaling {key}={scaling[key]} in config.json is not supported for Llama models; "
                f"expected {fixed:g} (torchtune's Llama 3 builders fix it)"
            )


def builder(c: dict) -> tuple[str, dict]:
    """Llama 3 / 3.1 / 3.2 differ in rope scaling and tied embeddings, so in builder.
    Tied embeddings without Llama 3 RoPE scaling (e.g. SmolLM2) get kit's builder:
    torchtune's tied builder would scale RoPE, which HF does not do for that config."""
    refuse_rope_scaling(c, "Llama", ("llama3",))
    refuse_own_head_dim(c, "Llama")
    refuse_other_scaling(c)
    args = common_args(c)
    args["rope_base"] = int(args["rope_base"])
    scaling = c.get("rope_scaling") or {}
    if FAMILY.tied(c):
        args["tie_word_embeddings"] = True
        if rope_type(c) != "llama3":
            return "kit.core.model.torchtune_builders.lora_llama", args
        args["scale_factor"] = scaling.get("factor", 32)
        return "torchtune.models.llama3_2.lora_llama3_2", args
    if rope_type(c) == "llama3":
        args["scale_factor"] = scaling.get("factor", 8)
        return "torchtune.models.llama3_1.lora_llama3_1", args
    return "torchtune.models.llama3.lora_llama3", args


def tokenizer(base: Path, max_seq_len) -> dict:
    return {
        "_component_": "torchtune.models.llama3.llama3_tokenizer",
        "path": str(base / "original" / "tokenizer.model"),
        "max_seq_len": max_seq_len,
    }


FAMILY = Family(
    name="llama3",
    hf_model_types=("llama",),
    model_type="LLAMA3",
    builder=builder,
    hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
    tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
    what="Llama 3, 3.1, 3.2 (torchtune lora_llama3 / _3_1 / _3_2); tied, unscaled RoPE (SmolLM2): kit's lora_llama",
    tokenizer=tokenizer,
    tokenizer_files=("original/tokenizer.model",),
)
