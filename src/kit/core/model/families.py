"""Model families kit knows: how a local HF folder maps onto torchtune.

For each family: the torchtune LoRA component builder (its shape arguments are
read from the folder's ``config.json``, so any local checkpoint of the family
works, tiny or 8B), the checkpointer ``model_type`` that converts HF <-> torchtune
weight names, and the tokenizer files torchtune needs.

It is also the one place that knows the weight conversions kit relies on:
HF <-> torchtune (the functions torchtune's checkpointer calls for the family, with
the same arguments) and torchtune LoRA -> PEFT adapter (torchtune's function plus
kit's fix for families whose HF q/k weights are not rotary-permuted).
tests/test_conversion.py compares a tiny model's logits through each of them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kit.core.errors import KitError


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
    """Llama 3 / 3.1 / 3.2 differ in rope scaling and tied embeddings, so in builder.
    Tied embeddings without Llama 3 RoPE scaling (e.g. SmolLM2) get kit's builder:
    torchtune's tied builder would scale RoPE, which HF does not do for that config."""
    args = _common_args(c)
    args["rope_base"] = int(args["rope_base"])
    scaling = c.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type not in (None, "default", "llama3"):
        raise KitError(
            f"rope_scaling type {rope_type!r} in config.json is not supported for Llama models; expected none or 'llama3'"
        )
    head_dim = c.get("head_dim")
    if head_dim and head_dim != c["hidden_size"] // c["num_attention_heads"]:
        raise KitError(
            f"head_dim {head_dim} != hidden_size / num_attention_heads in config.json; "
            "torchtune's Llama builders expect them equal"
        )
    if c.get("tie_word_embeddings"):
        args["tie_word_embeddings"] = True
        if rope_type != "llama3":
            return "kit.core.model.torchtune_builders.lora_llama", args
        args["scale_factor"] = scaling.get("factor", 32)
        return "torchtune.models.llama3_2.lora_llama3_2", args
    if rope_type == "llama3":
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


def _call(target: str, *args, **kwargs):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def _head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def unpermute_lora_b(tensors: dict, c: dict) -> dict:
    """Undo the rotary permutation ``tune_to_peft_adapter_weights`` applies to q/k
    ``lora_B`` (its ``_permute_lora_matrix``): view(heads, head_dim/2, 2, r) -> (heads, 2, head_dim/2, r)."""
    heads = {"q_proj": c["num_attention_heads"], "k_proj": c.get("num_key_value_heads", c["num_attention_heads"])}
    head_dim = _head_dim(c)
    out = dict(tensors)
    for key, value in tensors.items():
        proj = next((p for p in heads if f".{p}." in key), None)
        if proj and "lora_B" in key:
            rank = value.shape[-1]
            out[key] = (
                value.view(heads[proj], 2, head_dim // 2, rank).transpose(1, 2).reshape(heads[proj] * head_dim, rank).contiguous()
            )
    return out


@dataclass(frozen=True)
class Family:
    name: str
    hf_model_types: tuple[str, ...]
    model_type: str  # torchtune checkpointer model_type (HF <-> torchtune names)
    builder: Callable[[dict], tuple[str, dict]]  # config.json -> LoRA builder, its args
    tokenizer: Callable[[Path, object], dict]
    tokenizer_files: tuple[str, ...]
    hf_to_tune_fn: str  # torchtune's HF -> torchtune state-dict conversion for the family
    tune_to_hf_fn: str
    # torchtune stores q/k rotary-permuted relative to HF for Llama, not Qwen2
    hf_weights_permuted: bool = True

    def lora_builder(self, base: Path) -> tuple[str, dict]:
        return self.builder(read_config(base))

    def base_builder(self, c: dict) -> tuple[str, dict]:
        """The plain (no LoRA) torchtune builder: ``lora_qwen2`` -> ``qwen2``, same shape args."""
        component, args = self.builder(c)
        module, name = component.rsplit(".", 1)
        return f"{module}.{name.removeprefix('lora_')}", args

    def _conversion_args(self, c: dict) -> dict:
        # what torchtune's FullModelHFCheckpointer passes for this model_type
        args = {
            "num_heads": c["num_attention_heads"],
            "num_kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
            "dim": c["hidden_size"],
            "head_dim": c.get("head_dim"),
        }
        if self.model_type == "QWEN2":
            args["tie_word_embeddings"] = bool(c.get("tie_word_embeddings", False))
        return args

    def hf_to_tune(self, state_dict: dict, c: dict) -> dict:
        return _call(self.hf_to_tune_fn, state_dict, **self._conversion_args(c))

    def tune_to_hf(self, state_dict: dict, c: dict) -> dict:
        return _call(self.tune_to_hf_fn, state_dict, **self._conversion_args(c))

    def fix_peft_adapter(self, tensors: dict, c: dict) -> dict:
        """torchtune 0.6.1 permutes q/k lora_B for every family; undo it where HF is unpermuted."""
        return tensors if self.hf_weights_permuted else unpermute_lora_b(tensors, c)

    def tune_to_peft_adapter(self, adapter_state_dict: dict, c: dict) -> dict:
        """torchtune LoRA params -> PEFT ``adapter_model.safetensors`` tensors, as kit exports them."""
        args = {k: v for k, v in self._conversion_args(c).items() if k != "tie_word_embeddings"}
        converted = _call("torchtune.models.convert_weights.tune_to_peft_adapter_weights", adapter_state_dict, **args)
        return self.fix_peft_adapter(converted, c)

    def tokenizer_section(self, base: Path, max_seq_len) -> dict:
        missing = [f for f in self.tokenizer_files if not (base / f).exists()]
        if missing and has_chat_template(base):
            # no torchtune tokenizer files, but an HF tokenizer with its own chat template
            # (e.g. SmolLM2): train on exactly what that template renders
            return {
                "_component_": "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer",
                "path": str(base),
                "max_seq_len": max_seq_len,
            }
        if missing:
            raise KitError(
                f"model folder {str(base)!r} lacks tokenizer file(s) {missing}; "
                f"expected the {self.name} tokenizer files {list(self.tokenizer_files)}, or tokenizer.json "
                "with a chat template"
            )
        return self.tokenizer(base, max_seq_len)


def has_chat_template(base: Path) -> bool:
    """tokenizer.json plus a chat template (chat_template.jinja or in tokenizer_config.json)."""
    if not (base / "tokenizer.json").is_file():
        return False
    if (base / "chat_template.jinja").is_file():
        return True
    config = base / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


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
            hf_to_tune_fn="torchtune.models.qwen2._convert_weights.qwen2_hf_to_tune",
            tune_to_hf_fn="torchtune.models.qwen2._convert_weights.qwen2_tune_to_hf",
            hf_weights_permuted=False,
        ),
        Family(
            name="llama3",
            hf_model_types=("llama",),
            model_type="LLAMA3",
            builder=_llama3_builder,
            tokenizer=_llama3_tokenizer,
            tokenizer_files=("original/tokenizer.model",),
            hf_to_tune_fn="torchtune.models.convert_weights.hf_to_tune",
            tune_to_hf_fn="torchtune.models.convert_weights.tune_to_hf",
        ),
    )
}


def family_of(base: Path) -> Family:
    model_type = read_config(base).get("model_type")
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
    raise KitError(f"model_type {model_type!r} in {str(base / 'config.json')!r} is not supported; expected one of {supported}")


def check_lora_targets(lora_cfg, base: Path) -> None:
    """LoRA on the output layer is impossible when it is the embedding matrix (torchtune raises)."""
    if lora_cfg.apply_to_output and read_config(base).get("tie_word_embeddings"):
        raise KitError(
            f"lora.apply_to_output=true, but the model in {str(base)!r} ties its output layer to "
            "the embeddings (tie_word_embeddings in config.json), where torchtune cannot put LoRA; "
            "expected lora.apply_to_output=false"
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
