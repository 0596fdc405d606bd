"""torchtune builders for Llama-architecture models that torchtune's own builders get wrong.

torchtune ties the embeddings only in its Llama 3.2 builders, and those always apply
Llama 3.2's RoPE scaling (``Llama3ScaledRoPE``). A Llama-architecture checkpoint with
tied embeddings and HF's default RoPE (no ``rope_scaling``), such as SmolLM2, needs
the same decoder with plain rotary embeddings: ``1 / base**(2i/d)``, which is what
HF's ``default`` rope type computes. These builders take torchtune's Llama 3.2
component builders (same layers, same parameter names, so torchtune's LLAMA3 weight
conversion and LoRA code apply unchanged) and put plain RoPE into every attention
layer. kit/core/model/families.py picks them from the folder's config.json; the names follow
torchtune's ``lora_<name>`` / ``<name>`` convention so ``Family.base_builder`` finds
the plain one.
"""

from __future__ import annotations


def _plain_rope(model, embed_dim: int, num_heads: int, max_seq_len: int, rope_base):
    from torchtune.modules import RotaryPositionalEmbeddings

    # one module shared by all layers, as torchtune's builders do
    rope = RotaryPositionalEmbeddings(dim=embed_dim // num_heads, max_seq_len=max_seq_len, base=rope_base)
    for layer in model.layers:
        layer.attn.pos_embeddings = rope
    return model


def llama(*, embed_dim: int, num_heads: int, max_seq_len: int, rope_base=10_000, **kwargs):
    """Llama decoder (tied or untied embeddings) with unscaled RoPE."""
    from torchtune.models.llama3_2._component_builders import llama3_2

    model = llama3_2(embed_dim=embed_dim, num_heads=num_heads, max_seq_len=max_seq_len, rope_base=rope_base, **kwargs)
    return _plain_rope(model, embed_dim, num_heads, max_seq_len, rope_base)


def lora_llama(*, embed_dim: int, num_heads: int, max_seq_len: int, rope_base=10_000, **kwargs):
    """``llama`` with LoRA (torchtune's ``lora_llama3_2`` layers, unscaled RoPE)."""
    from torchtune.models.llama3_2._component_builders import lora_llama3_2

    model = lora_llama3_2(embed_dim=embed_dim, num_heads=num_heads, max_seq_len=max_seq_len, rope_base=rope_base, **kwargs)
    return _plain_rope(model, embed_dim, num_heads, max_seq_len, rope_base)
