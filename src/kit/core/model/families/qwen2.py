"""Qwen2 / Qwen2.5: torchtune's ``lora_qwen2`` (q/k/v bias, tied embeddings for the small ones)."""

from __future__ import annotations

from pathlib import Path

from kit.core.model.families._family import Family, common_args, refuse_rope_scaling, standard_conversion_args


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Qwen2")
    return "torchtune.models.qwen2.lora_qwen2", {**common_args(c), "tie_word_embeddings": FAMILY.tied(c)}


def conversion_args(c: dict) -> dict:
    return {**standard_conversion_args(c), "tie_word_embeddings": FAMILY.tied(c)}


def tokenizer(base: Path, max_seq_len) -> dict:
    section = {
        "_component_": "torchtune.models.qwen2.qwen2_tokenizer",
        "path": str(base / "vocab.json"),
        "merges_file": str(base / "merges.txt"),
        "max_seq_len": max_seq_len,
    }
    if (base / "tokenizer.json").exists():  # the folder's own special-token ids
        section["special_tokens_path"] = str(base / "tokenizer.json")
    return section


FAMILY = Family(
    name="qwen2",
    hf_model_types=("qwen2",),
    model_type="QWEN2",
    builder=builder,
    hf_to_tune_fn="torchtune.models.qwen2._convert_weights.qwen2_hf_to_tune",
    tune_to_hf_fn="torchtune.models.qwen2._convert_weights.qwen2_tune_to_hf",
    what="Qwen2, Qwen2.5 (torchtune lora_qwen2; its HF q/k are not rotary-permuted: kit fixes torchtune's PEFT export)",
    tokenizer=tokenizer,
    tokenizer_files=("vocab.json", "merges.txt"),
    hf_weights_permuted=False,
    conversion_args=conversion_args,
)
