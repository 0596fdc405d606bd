"""Phi-3 and Phi-4 (model_type ``phi3``): torchtune's Phi-3 layers with separate q/k/v and gate/up
projections, against Hugging Face's fused ``qkv_proj`` and ``gate_up_proj``.

The LoRA kit exports is exact, not an approximation: torchtune's LoRA on q, k and v (rank r each,
scaling alpha/r) is one LoRA on the fused ``qkv_proj`` of rank n*r (n: how many of q, k, v carry
LoRA), ``lora_A`` = the n ``lora_A`` matrices stacked, ``lora_B`` block-diagonal (each part's
``lora_B`` in its own rows and columns, zero elsewhere): ``B A x`` is then q's, k's and v's update
in the rows HF's fused projection gives them. The same for gate/up (rank 2r). PEFT scales by
``lora_alpha / r`` per module, so ``rank_pattern`` gives the fused modules rank n*r and
``alpha_pattern`` alpha n*alpha: ``n*alpha / (n*r) = alpha / r``, torchtune's scaling; a reader that
ignores the patterns (vLLM reads only ``r`` and ``lora_alpha``) scales by ``alpha / r`` too.
torchtune's checkpointer writes no PEFT adapter for Phi; kit writes it (``torchtune_writes_peft``).

``phi4`` is the same code for the Phi-4 checkpoints (torchtune's ``PHI4`` model type): Phi-4-mini
(partial rotary, LongRoPE, tied embeddings: kit's ``lora_phi3_longrope``) and Phi-4 14B.
Hugging Face's Phi-3 applies its ``sliding_window`` (Phi-3-mini-4k: 2047) and torchtune does not:
exact for sequences up to that window.
"""

from __future__ import annotations

import math
from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.families._family import Family, common_args, heads, lora_module_names, refuse_rope_scaling, rope_type

# torchtune module -> (HF module, fused part): the order of the parts is HF's row order
TO_HF = {
    "q_proj": ("self_attn.qkv_proj", 0),
    "k_proj": ("self_attn.qkv_proj", 1),
    "v_proj": ("self_attn.qkv_proj", 2),
    "output_proj": ("self_attn.o_proj", 0),
    "w1": ("mlp.gate_up_proj", 0),
    "w3": ("mlp.gate_up_proj", 1),
    "w2": ("mlp.down_proj", 0),
    "output": ("lm_head", 0),
}
FUSED = ("qkv_proj", "gate_up_proj")


def is_phi4(c: dict) -> bool:
    """Phi-4 checkpoints: Phi-4-mini rotates part of each head, Phi-4 14B has a 100k tiktoken vocabulary."""
    return float(c.get("partial_rotary_factor") or 1.0) < 1.0 or c["vocab_size"] >= 100_000


def builder(c: dict) -> tuple[str, dict]:
    refuse_rope_scaling(c, "Phi-3", ("longrope",))
    args = common_args(c)
    head = c["hidden_size"] // c["num_attention_heads"]
    rotary = int(head * float(c.get("partial_rotary_factor") or 1.0))
    tied = bool(c.get("tie_word_embeddings", False))
    if rotary == head and rope_type(c) is None and not tied:
        return "torchtune.models.phi3.lora_phi3", args
    scaling = c.get("rope_scaling") or {}
    original = int(c.get("original_max_position_embeddings") or c["max_position_embeddings"])
    attention_factor = scaling.get("attention_factor") or (
        longrope_attention_factor(c["max_position_embeddings"], original) if scaling else 1.0
    )
    args.update(
        rotary_dim=rotary,
        rope_positions=original if scaling else c["max_position_embeddings"],
        short_factor=list(scaling["short_factor"]) if scaling else None,
        attention_factor=float(attention_factor),
        tie_word_embeddings=tied,
    )
    return "kit.core.model.torchtune_builders.lora_phi3_longrope", args


def longrope_attention_factor(max_position_embeddings: int, original_max_position_embeddings: int) -> float:
    """LongRoPE's default cos/sin factor, as transformers' ``_compute_longrope_parameters`` computes it."""
    factor = max_position_embeddings / original_max_position_embeddings
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max_position_embeddings))


def conversion_args(c: dict) -> dict:
    """As torchtune's checkpointer calls ``phi3_hf_to_tune``: sizes only for grouped-query attention."""
    num_heads, num_kv_heads = heads(c)
    if num_heads == num_kv_heads:
        return {"num_heads": None, "num_kv_heads": None, "dim": None}
    return {"num_heads": num_heads, "num_kv_heads": num_kv_heads, "dim": c["hidden_size"]}


def part_sizes(c: dict) -> dict[str, list[int]]:
    """Output rows of each part of HF's fused projections."""
    num_heads, num_kv_heads = heads(c)
    head = c["hidden_size"] // num_heads
    return {
        "self_attn.qkv_proj": [num_heads * head, num_kv_heads * head, num_kv_heads * head],
        "mlp.gate_up_proj": [c["intermediate_size"]] * 2,
    }


def fused_lora(parts: dict[int, tuple], sizes: list[int]):
    """One LoRA (A, B) equal to the parts' LoRAs: A stacked, B block-diagonal in the parts' rows."""
    import torch

    order = sorted(parts)
    a = torch.cat([parts[i][0] for i in order], dim=0)
    rank = parts[order[0]][0].shape[0]
    b = parts[order[0]][1].new_zeros(sum(sizes), rank * len(order))  # same dtype and device (meta too)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for j, i in enumerate(order):
        b[starts[i] : starts[i] + sizes[i], j * rank : (j + 1) * rank] = parts[i][1]
    return a, b


class PhiFamily(Family):
    def tune_to_hf(self, state_dict: dict, c: dict) -> dict:
        from torchtune.models.phi3._convert_weights import phi3_tune_to_hf

        return phi3_tune_to_hf(state_dict)  # concatenates: no sizes needed, as torchtune's checkpointer calls it

    def tune_to_peft_adapter(self, adapter_state_dict: dict, c: dict) -> dict:
        """torchtune's LoRA on separate projections -> PEFT's on HF's fused ones (see the module docstring)."""
        groups: dict[tuple[str, str], dict[int, list]] = {}
        for key, value in adapter_state_dict.items():
            layer, module, which = split_key(key)
            hf, part = TO_HF[module]
            slot = groups.setdefault((layer, hf), {}).setdefault(part, [None, None])
            slot[0 if which == "lora_a" else 1] = value
        sizes = part_sizes(c)
        out = {}
        for (layer, hf), parts in groups.items():
            a, b = fused_lora(parts, sizes[hf]) if hf in sizes else parts[0]
            prefix = f"base_model.model.{'model.layers.' + layer + '.' if layer else ''}{hf}"
            out[f"{prefix}.lora_A.weight"], out[f"{prefix}.lora_B.weight"] = a.contiguous(), b.contiguous()
        return out

    def peft_config(self, section: dict, base: Path | None = None) -> dict:
        rank, alpha = int(section["lora_rank"]), float(section["lora_alpha"])
        per_module: dict[str, int] = {}
        for name in lora_module_names(section):
            hf = TO_HF[name][0].rsplit(".", 1)[-1]
            per_module[hf] = per_module.get(hf, 0) + 1
        fused = {m: n for m, n in per_module.items() if m in FUSED and n > 1}
        config = {
            "r": rank,
            "lora_alpha": alpha,
            "target_modules": sorted(per_module),
            "rank_pattern": {m: n * rank for m, n in fused.items()},
            "alpha_pattern": {m: n * alpha for m, n in fused.items()},
            "task_type": "CAUSAL_LM",
            "peft_type": "LORA",
        }
        if base is not None:
            config["base_model_name_or_path"] = str(base)
        return config


def split_key(key: str) -> tuple[str, str, str]:
    """``layers.3.attn.q_proj.lora_a.weight`` -> ("3", "q_proj", "lora_a");
    ``output.lora_b.weight`` -> ("", "output", "lora_b")."""
    parts = key.split(".")
    if parts[-1] != "weight" or parts[-2] not in ("lora_a", "lora_b"):
        raise KitError(f"torchtune adapter key {key!r} is not a LoRA weight; expected <module>.lora_a.weight or .lora_b.weight")
    return (parts[1] if parts[0] == "layers" else ""), parts[-3], parts[-2]


def _family(name: str, model_type: str, what: str, accepts) -> PhiFamily:
    return PhiFamily(
        name=name,
        hf_model_types=("phi3",),
        model_type=model_type,
        builder=builder,
        hf_to_tune_fn="torchtune.models.phi3._convert_weights.phi3_hf_to_tune",
        tune_to_hf_fn="torchtune.models.phi3._convert_weights.phi3_tune_to_hf",
        what=what,
        hf_weights_permuted=False,  # rotate-half RoPE in both: no permutation anywhere
        accepts=accepts,
        conversion_args=conversion_args,
        torchtune_writes_peft=False,
    )


PHI4 = _family(
    "phi4",
    "PHI4",
    "Phi-4-mini (partial rotary, LongRoPE, tied: kit's lora_phi3_longrope) and Phi-4 14B; fused qkv/gate_up LoRA",
    is_phi4,
)
PHI3 = _family(
    "phi3",
    "PHI3_MINI",
    "Phi-3 mini/medium (torchtune lora_phi3; LongRoPE variants: kit's lora_phi3_longrope); fused qkv/gate_up LoRA",
    lambda c: not is_phi4(c),
)
