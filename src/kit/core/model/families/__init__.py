"""Model families kit knows: how a local HF folder maps onto torchtune.

One module per family (``qwen2``, ``qwen3``, ``llama3``, ``llama2``, ``mistral``, ``gemma``,
``gemma2``, ``phi3`` with ``phi4``), each defining its ``Family`` (``_family.py``): the torchtune
LoRA builder with shape arguments read from ``config.json``, the HF <-> torchtune conversion, the
torchtune LoRA -> PEFT adapter conversion (Hugging Face's module names), the tokenizer and the LoRA
targets it allows. ``family_of`` picks the first family in ``FAMILIES`` whose ``matches`` accepts
the folder's ``config.json`` (model_type, and for ``llama``/``phi3`` which kind of checkpoint).
tests/test_conversion.py and tests/test_families.py prove each conversion on tiny models.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.families import gemma, gemma2, llama2, llama3, mistral, phi3, qwen2, qwen3
from kit.core.model.families._family import (
    Family,
    _call,
    has_chat_template,
    head_dim,
    peft_settings,
    read_config,
    unpermute_lora_b,
)

# matching order: a family with an ``accepts`` test comes before the one that takes the rest of its model_type
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        qwen2.FAMILY,
        qwen3.FAMILY,
        llama2.FAMILY,
        llama3.FAMILY,
        mistral.FAMILY,
        gemma.FAMILY,
        gemma2.FAMILY,
        phi3.PHI4,
        phi3.PHI3,
    )
}

__all__ = [
    "FAMILIES",
    "Family",
    "_call",
    "check_lora_targets",
    "family_of",
    "family_of_config",
    "has_chat_template",
    "head_dim",
    "load_args",
    "peft_ranks",
    "peft_settings",
    "read_config",
    "unpermute_lora_b",
    "weight_files",
]


def family_of_config(c: dict, where: str = "config.json") -> Family:
    for family in FAMILIES.values():
        if family.matches(c):
            return family
    supported = sorted({t for f in FAMILIES.values() for t in f.hf_model_types})
    raise KitError(f"model_type {c.get('model_type')!r} in {where!r} is not supported; expected one of {supported}")


def family_of(base: Path) -> Family:
    return family_of_config(read_config(base), str(base / "config.json"))


def load_args(base: Path) -> dict:
    """What a Hugging Face ``from_pretrained`` of this folder needs for its family ({} when none or unknown)."""
    try:
        return family_of(Path(base)).load_args()
    except KitError:
        return {}


def check_lora_targets(lora_cfg, base: Path) -> None:
    """LoRA on the output layer is impossible when it is the embedding matrix (torchtune raises)."""
    c = read_config(base)
    try:
        tied = family_of_config(c).tied(c)
    except KitError:
        tied = bool(c.get("tie_word_embeddings"))
    if lora_cfg.apply_to_output and tied:
        raise KitError(
            f"lora.apply_to_output=true, but the model in {str(base)!r} ties its output layer to "
            "the embeddings (tie_word_embeddings in config.json), where torchtune cannot put LoRA; "
            "expected lora.apply_to_output=false"
        )


def peft_ranks(config: dict) -> set[int]:
    """Every rank a PEFT adapter config gives a module: ``r`` and its ``rank_pattern`` values."""
    return {int(config["r"]), *(int(v) for v in (config.get("rank_pattern") or {}).values())}


def weight_files(base: Path, allow_pickle: bool = False) -> list[str]:
    """The checkpoint's weight files: safetensors, or pickled .bin only when allowed."""
    safetensors = sorted(p.name for p in base.glob("*.safetensors"))
    if safetensors:
        return safetensors
    pickled = sorted(p.name for p in base.glob("*.bin") if p.name != "training_args.bin")
    if pickled and not allow_pickle:
        raise KitError(
            f"model folder {str(base)!r} holds only pickled weights {pickled}; "
            "expected *.safetensors (set model.allow_pickle=true to load pickles you trust)"
        )
    if not pickled:
        raise KitError(f"model folder {str(base)!r} has no weight files; expected *.safetensors")
    return pickled
