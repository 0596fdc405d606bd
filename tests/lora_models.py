"""Tiny random causal LMs of several families and PEFT adapters for them, built offline from
transformers' own config classes (tests of kit.lora.fused, kit.lora.decode and the serve engine).
The output layer is scaled so logits are peaked: random-init models have near-flat logits, where
two numerically close paths pick different greedy tokens."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 512
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def family_config(family: str):
    import transformers as tf

    common = dict(vocab_size=VOCAB, max_position_embeddings=256, bos_token_id=0, eos_token_id=2, pad_token_id=0, **SMALL)
    if family == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=False)
    if family == "llama_tied":
        return tf.LlamaConfig(**common, tie_word_embeddings=True)
    if family == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=False)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=8)
    if family == "gemma":
        return tf.GemmaConfig(**common, head_dim=8)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, sliding_window=8, query_pre_attn_scalar=8)
    if family == "phi3":
        return tf.Phi3Config(**common)
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=8, tie_word_embeddings=False)
    raise ValueError(family)


FAMILIES = ["qwen2", "llama_tied", "llama", "mistral", "gemma", "gemma2", "phi3", "qwen3"]


def targets(family: str) -> list[str]:
    return ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] if family == "phi3" else ATTN_MLP


def build_base(family: str, out: Path) -> Path:
    from transformers import AutoModelForCausalLM

    from kit.core.model.tiny import build_tokenizer

    out.mkdir(parents=True)
    build_tokenizer(out, VOCAB)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(family_config(family), dtype=torch.float32).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(12)  # peaked logits (see the module docstring)
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_adapter(base: Path, family: str, out: Path, seed: int, kind: str) -> Path:
    """kind "patterns": r4 with rank/alpha patterns; "rslora_head": r8, rsLoRA, lm_head too; "small": r2 on q/v only."""
    from peft import LoraConfig, get_peft_model

    from kit.core.model.loader import load_model

    names = targets(family)
    if kind == "patterns":
        first, last = names[0], names[-1]
        config = LoraConfig(r=4, lora_alpha=8, target_modules=names, rank_pattern={first: 2, last: 6}, alpha_pattern={last: 3})
    elif kind == "rslora_head":
        config = LoraConfig(r=8, lora_alpha=4, use_rslora=True, target_modules=[*names, "lm_head"])
    else:
        config = LoraConfig(r=2, lora_alpha=2, target_modules=[names[0], names[1]] if family == "phi3" else ["q_proj", "v_proj"])
    model = get_peft_model(load_model(base), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(out, save_embedding_layers=False)  # LoRA tensors only, as kit's exports
    return out
