"""Model families kit knows: how a local HF folder maps onto torchtune.

For each family: the torchtune LoRA component builder (its shape arguments are
read from the folder's ``config.json``, so any local checkpoint of the family
works, tiny or 8B), the checkpointer ``model_type`` that converts HF <-> torchtune
weight names, and the tokenizer files torchtune needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kit.errors import KitError


def read_config(base: Path) -> dict:
    path = base / "config.json"
    if not path.is_file():
        raise KitError(f"model folder {str(base)!r} has no config.json; expected a Hugging Face model folder")
    return json.loads(path.read_text())


def _common_args(c: dict) -> dict:
    return {
        "vocab_size": c["vocab_size"],
        "num_layers": c["num_hidden_layers"],
        "num_heads": c["num_attention_heads"],
        "num_kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
        "embed_dim": c["hidden_size"],
        "intermediate_dim": c["intermediate_size"],
        "max_seq_len": c["max_position_embeddings"],
        "norm_eps": c.get("rms_norm_eps", 1e-6),
        "rope_base": c.get("rope_theta", 10000.0),
    }


def _qwen2_builder(c: dict) -> tuple[str, dict]:
    args = {**_common_args(c), "tie_word_embeddings": bool(c.get("tie_word_embeddings", False))}
    return "torchtune.models.qwen2.lora_qwen2", args


def _llama3_builder(c: dict) -> tuple[str, dict]:
    """Llama 3 / 3.1 / 3.2 differ in rope scaling and tied embeddings, so in builder."""
    args = _common_args(c)
    args["rope_base"] = int(args["rope_base"])
    scaling = c.get("rope_scaling") or {}
    if c.get("tie_word_embeddings"):
        args["scale_factor"] = scaling.get("factor", 32)
        args["tie_word_embeddings"] = True
        return "torchtune.models.llama3_2.lora_llama3_2", args
    if scaling.get("rope_type") == "llama3":
        args["scale_factor"] = scaling.get("factor", 8)
        return "torchtune.models.llama3_1.lora_llama3_1", args
    return "torchtune.models.llama3.lora_llama3", args


def _qwen2_tokenizer(base: Path, max_seq_len) -> dict:
    section = {
        "_component_": "torchtune.models.qwen2.qwen2_tokenizer",
        "path": str(base / "vocab.json"),
        "merges_file": str(base / "merges.txt"),
        "max_seq_len": max_seq_len,
    }
    if (base / "tokenizer.json").exists():  # the folder's own special-token ids
        section["special_tokens_path"] = str(base / "tokenizer.json")
    return section


def _llama3_tokenizer(base: Path, max_seq_len) -> dict:
    return {
        "_component_": "torchtune.models.llama3.llama3_tokenizer",
        "path": str(base / "original" / "tokenizer.model"),
        "max_seq_len": max_seq_len,
    }


@dataclass(frozen=True)
class Family:
    name: str
    hf_model_types: tuple[str, ...]
    model_type: str  # torchtune checkpointer model_type (HF <-> torchtune names)
    builder: Callable[[dict], tuple[str, dict]]  # config.json -> LoRA builder, its args
    tokenizer: Callable[[Path, object], dict]
    tokenizer_files: tuple[str, ...]
    # torchtune stores q/k rotary-permuted relative to HF for Llama, not Qwen2
    hf_weights_permuted: bool = True

    def lora_builder(self, base: Path) -> tuple[str, dict]:
        return self.builder(read_config(base))

    def tokenizer_section(self, base: Path, max_seq_len) -> dict:
        missing = [f for f in self.tokenizer_files if not (base / f).exists()]
        if missing:
            raise KitError(
                f"model folder {str(base)!r} lacks tokenizer file(s) {missing}; "
                f"expected the {self.name} tokenizer files {list(self.tokenizer_files)}"
            )
        return self.tokenizer(base, max_seq_len)


FAMILIES = {
    f.name: f
    for f in (
        Family(
            name="qwen2",
            hf_model_types=("qwen2",),
            model_type="QWEN2",
            builder=_qwen2_builder,
            tokenizer=_qwen2_tokenizer,
            tokenizer_files=("vocab.json", "merges.txt"),
            hf_weights_permuted=False,
        ),
        Family(
            name="llama3",
            hf_model_types=("llama",),
            model_type="LLAMA3",
            builder=_llama3_builder,
            tokenizer=_llama3_tokenizer,
            tokenizer_files=("original/tokenizer.model",),
        ),
    )
}


def family_of(base: Path) -> Family:
    model_type = read_config(base).get("model_type")
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
    raise KitError(
        f"model_type {model_type!r} in {str(base / 'config.json')!r} is not supported; "
        f"expected one of {supported}"
    )


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
