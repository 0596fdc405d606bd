"""``Family``: what kit knows about one model family, and the helpers every family shares.

A family maps a local HF folder onto torchtune: the LoRA component builder (its shape
arguments read from the folder's ``config.json``, so any checkpoint of the family works, tiny
or 8B), the checkpointer ``model_type`` that converts HF <-> torchtune weight names, the
tokenizer section of the recipe config, the conversion of torchtune's LoRA weights into the
PEFT adapter kit exports (target modules as Hugging Face names them), and which LoRA targets
the family allows. tests/test_families.py proves each conversion on a tiny model of each family.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kit.core.errors import KitError

TORCHTUNE_CHECKPOINTER = "torchtune.training.FullModelHFCheckpointer"
HF_CHAT_TOKENIZER = "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer"


def read_config(base: Path) -> dict:
    path = base / "config.json"
    if not path.is_file():
        raise KitError(f"model folder {str(base)!r} has no config.json; expected a Hugging Face model folder")
    return json.loads(path.read_text())


def _call(target: str | Callable, *args, **kwargs):
    if callable(target):
        return target(*args, **kwargs)
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def heads(c: dict) -> tuple[int, int]:
    """(query heads, key/value heads) of a config.json."""
    return c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]


def head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def common_args(c: dict) -> dict:
    """The shape arguments every torchtune decoder builder takes, from config.json."""
    num_heads, num_kv_heads = heads(c)
    return {
        "vocab_size": c["vocab_size"],
        "num_layers": c["num_hidden_layers"],
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "embed_dim": c["hidden_size"],
        "intermediate_dim": c["intermediate_size"],
        "max_seq_len": c["max_position_embeddings"],
        "norm_eps": c.get("rms_norm_eps", 1e-6),
        "rope_base": c.get("rope_theta", 10000.0),
    }


def rope_type(c: dict) -> str | None:
    scaling = c.get("rope_scaling") or {}
    found = scaling.get("rope_type", scaling.get("type"))
    return None if found == "default" else found


def refuse_rope_scaling(c: dict, family: str, allowed: tuple = ()) -> None:
    found = rope_type(c)
    if found is not None and found not in allowed:
        expected = " or ".join(["none", *(repr(a) for a in allowed)])
        raise KitError(f"rope_scaling type {found!r} in config.json is not supported for {family} models; expected {expected}")


def refuse_own_head_dim(c: dict, family: str) -> None:
    """torchtune's builders of most families compute head_dim = hidden_size / num_attention_heads."""
    given = c.get("head_dim")
    if given and given != c["hidden_size"] // c["num_attention_heads"]:
        raise KitError(
            f"head_dim {given} != hidden_size / num_attention_heads ({c['hidden_size']} / {c['num_attention_heads']}) "
            f"in config.json; torchtune's {family} builder expects them equal"
        )


def standard_conversion_args(c: dict) -> dict:
    """What torchtune's FullModelHFCheckpointer passes to a family's weight conversion."""
    num_heads, num_kv_heads = heads(c)
    return {"num_heads": num_heads, "num_kv_heads": num_kv_heads, "dim": c["hidden_size"], "head_dim": c.get("head_dim")}


def unpermute_lora_b(tensors: dict, c: dict) -> dict:
    """Undo the rotary permutation ``tune_to_peft_adapter_weights`` applies to q/k
    ``lora_B`` (its ``_permute_lora_matrix``): view(heads, head_dim/2, 2, r) -> (heads, 2, head_dim/2, r)."""
    num_heads, num_kv_heads = heads(c)
    per_proj = {"q_proj": num_heads, "k_proj": num_kv_heads}
    dim = head_dim(c)
    out = dict(tensors)
    for key, value in tensors.items():
        proj = next((p for p in per_proj if f".{p}." in key), None)
        if proj and "lora_B" in key:
            rank = value.shape[-1]
            n = per_proj[proj]
            out[key] = value.view(n, 2, dim // 2, rank).transpose(1, 2).reshape(n * dim, rank).contiguous()
    return out


def lora_module_names(section: dict) -> list[str]:
    """torchtune's names of the modules a recipe's ``model`` section puts LoRA on."""
    from torchtune.modules.peft import get_lora_module_names

    return get_lora_module_names(
        list(section["lora_attn_modules"]), bool(section["apply_lora_to_mlp"]), bool(section.get("apply_lora_to_output", False))
    )


def peft_settings(config: dict) -> dict:
    """The settings of a PEFT adapter config that decide what it computes, normalized for comparing
    a saved ``adapter_config.json`` with ``Family.peft_config`` of what torchtune.yaml trained."""
    targets = config.get("target_modules") or []
    return {
        "r": int(config["r"]) if config.get("r") is not None else None,
        "lora_alpha": float(config["lora_alpha"]) if config.get("lora_alpha") is not None else None,
        "target_modules": sorted([targets] if isinstance(targets, str) else targets),
        "rank_pattern": {k: int(v) for k, v in sorted((config.get("rank_pattern") or {}).items())},
        "alpha_pattern": {k: float(v) for k, v in sorted((config.get("alpha_pattern") or {}).items())},
    }


def has_chat_template(base: Path) -> bool:
    """tokenizer.json plus a chat template (chat_template.jinja or in tokenizer_config.json)."""
    from kit.core.model.prompt_format import folder_template

    return (base / "tokenizer.json").is_file() and folder_template(base) is not None


def has_hf_tokenizer(base: Path) -> bool:
    """Files ``AutoTokenizer`` builds a tokenizer from."""
    return any((base / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


@dataclass(frozen=True)
class Family:
    name: str
    hf_model_types: tuple[str, ...]
    model_type: str  # torchtune checkpointer model_type (HF <-> torchtune names)
    builder: Callable[[dict], tuple[str, dict]]  # config.json -> LoRA builder, its shape args
    hf_to_tune_fn: str | Callable  # torchtune's HF -> torchtune state-dict conversion for the family
    tune_to_hf_fn: str | Callable
    what: str = ""  # one line: which checkpoints, what is special
    # torchtune's own tokenizer section; used only when the folder has its files and a chat template
    # (which that tokenizer renders); None: the family always uses kit's HF tokenizer (``hf_chat_tokenizer``)
    tokenizer: Callable[[Path, object], dict] | None = None
    tokenizer_files: tuple[str, ...] = ()
    # torchtune's LoRA-to-PEFT conversion permutes q/k lora_B for the Llama rotary layout; right only
    # for families whose HF q/k weights torchtune's conversion permutes too (False: kit undoes it)
    hf_weights_permuted: bool = True
    accepts: Callable[[dict], bool] | None = None  # a further test on config.json beside model_type
    conversion_args: Callable[[dict], dict] = standard_conversion_args
    tied_default: bool = False  # tie_word_embeddings when config.json leaves it out (the HF config class's default)
    output_lora: bool = True  # the builder takes apply_lora_to_output (Gemma's always tie: they have no such argument)
    checkpointer: str = TORCHTUNE_CHECKPOINTER  # the recipe's checkpointer component
    torchtune_writes_peft: bool = True  # torchtune's checkpointer writes the PEFT adapter (not for Phi)
    attn_implementation: str | None = None  # what every HF load of the family must use (Gemma 2: eager)

    def matches(self, c: dict) -> bool:
        return c.get("model_type") in self.hf_model_types and (self.accepts is None or self.accepts(c))

    def tied(self, c: dict) -> bool:
        return bool(c.get("tie_word_embeddings", self.tied_default))

    def lora_builder(self, base: Path) -> tuple[str, dict]:
        return self.builder(read_config(base))

    def base_builder(self, c: dict) -> tuple[str, dict]:
        """The plain (no LoRA) torchtune builder: ``lora_qwen2`` -> ``qwen2``, same shape args."""
        component, args = self.builder(c)
        module, name = component.rsplit(".", 1)
        return f"{module}.{name.removeprefix('lora_')}", args

    def lora_section(self, lora) -> dict:
        """The LoRA arguments of the recipe's ``model`` section for kit's ``lora`` config."""
        section = {
            "lora_attn_modules": list(lora.attn_modules),
            "apply_lora_to_mlp": bool(lora.apply_to_mlp),
            "apply_lora_to_output": bool(lora.apply_to_output),
            "lora_rank": int(lora.rank),
            "lora_alpha": float(lora.alpha),
            "lora_dropout": float(lora.dropout),
        }
        if not self.output_lora:
            section.pop("apply_lora_to_output")
        return section

    def hf_to_tune(self, state_dict: dict, c: dict) -> dict:
        return _call(self.hf_to_tune_fn, state_dict, **self.conversion_args(c))

    def tune_to_hf(self, state_dict: dict, c: dict) -> dict:
        return _call(self.tune_to_hf_fn, state_dict, **self.conversion_args(c))

    def fix_peft_adapter(self, tensors: dict, c: dict) -> dict:
        """torchtune 0.6.1 permutes q/k lora_B for every family; undo it where that is wrong."""
        return tensors if self.hf_weights_permuted else unpermute_lora_b(tensors, c)

    def tune_to_peft_adapter(self, adapter_state_dict: dict, c: dict) -> dict:
        """torchtune LoRA params -> PEFT ``adapter_model.safetensors`` tensors, as kit exports them."""
        from torchtune.models.convert_weights import tune_to_peft_adapter_weights

        converted = tune_to_peft_adapter_weights(adapter_state_dict, **standard_conversion_args(c))
        return self.fix_peft_adapter(converted, c)

    def peft_config(self, section: dict, base: Path | None = None) -> dict:
        """The PEFT ``adapter_config.json`` of a LoRA trained with this recipe ``model`` section."""
        from torchtune.models.convert_weights import tune_to_peft_adapter_config

        config = tune_to_peft_adapter_config(
            {
                "r": int(section["lora_rank"]),
                "lora_alpha": float(section["lora_alpha"]),
                "target_modules": lora_module_names(section),
            },
            base_model_name_or_path=str(base) if base else None,
        )
        return {**config, "task_type": "CAUSAL_LM", "peft_type": "LORA"}

    def tokenizer_section(self, base: Path, max_seq_len) -> dict:
        """torchtune's tokenizer where it renders the folder's own chat template; otherwise kit's HF
        tokenizer, with that template or, without one, kit's plain format (kit.core.model.prompt_format)."""
        has_files = self.tokenizer is not None and all((base / f).exists() for f in self.tokenizer_files)
        if has_files and has_chat_template(base):
            return self.tokenizer(base, max_seq_len)
        if has_hf_tokenizer(base):
            return {"_component_": HF_CHAT_TOKENIZER, "path": str(base), "max_seq_len": max_seq_len}
        expected = f"the {self.name} tokenizer files {list(self.tokenizer_files)} or " if self.tokenizer_files else ""
        raise KitError(
            f"model folder {str(base)!r} has no tokenizer files; expected {expected}tokenizer.json (or tokenizer.model)"
        )

    def load_args(self) -> dict:
        """Keyword arguments every Hugging Face ``from_pretrained`` of this family needs."""
        return {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
