"""torchtune builders for models torchtune 0.6.1 builds wrong, or not at all.

Every builder here is made of torchtune's own modules (``MultiHeadAttention``,
``TransformerSelfAttentionLayer``, ``LoRALinear``, ``RMSNorm``, ``TiedLinear``) and keeps
torchtune's parameter names, so torchtune's recipes, its LoRA code (``get_adapter_params``,
``get_merged_lora_ckpt``) and the family's weight conversion apply unchanged. Each comes as
``lora_<name>`` and ``<name>`` (the same arguments without the LoRA ones), the convention
``Family.base_builder`` relies on. kit.core.model.families picks them from the folder's
config.json; tests/test_families.py compares each with the Hugging Face model of the same
config, logits in fp32.

- ``llama`` / ``lora_llama``: a Llama with tied embeddings and unscaled RoPE (SmolLM2).
  torchtune ties the embeddings only in its Llama 3.2 builders, which always scale RoPE.
- ``qwen3`` / ``lora_qwen3``: Qwen3, which torchtune 0.6.1 lacks: a ``head_dim`` of its own
  (Qwen3-0.6B: 128, not 1024 / 16), no q/k/v bias, and an RMSNorm per head on q and k applied
  *before* RoPE, as Hugging Face does (torchtune's ``MultiHeadAttention`` applies its
  ``q_norm``/``k_norm`` after RoPE: the same only while the norm's weights are all equal).
- ``phi3_longrope`` / ``lora_phi3_longrope``: torchtune's Phi-3 with what its ``phi3`` lacks
  for Phi-4-mini and Phi-3.5: partial rotary embeddings (Phi-4-mini rotates 75% of each
  head), LongRoPE's short factors and attention factor, tied embeddings.
- ``gemma`` / ``lora_gemma``: torchtune's Gemma with the MLP activation config.json names
  (transformers 4.57 reads ``hidden_act``, exact GELU in google/gemma-2b; torchtune always uses
  the tanh approximation).
- ``gemma2`` / ``lora_gemma2``: torchtune's Gemma 2 with its final soft-capping where
  Hugging Face applies it, on the logits: torchtune 0.6.1's ``Gemma2FinalNorm`` caps the
  normed hidden state before the output projection instead (``tanh(h / 30) * 30``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchtune.modules import MultiHeadAttention

# -- Llama with tied embeddings and plain RoPE (SmolLM2) --------------------------------------


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


# -- Qwen3 -------------------------------------------------------------------------------------


class NormBeforeRopeAttention(MultiHeadAttention):
    """torchtune's attention with its per-head q/k norms applied before RoPE (Qwen3)."""

    def forward(self, x, y=None, *, mask=None, input_pos=None):
        """``MultiHeadAttention.forward`` of torchtune 0.6.1 with one change: q and k are
        normalized per head before the positional embedding, not after."""
        b, s_x, _ = x.shape
        q_per_kv = self.num_heads // self.num_kv_heads
        q = self.q_norm(self.q_proj(x).view(b, s_x, self.num_heads, self.head_dim))
        q = self.pos_embeddings(q, input_pos=input_pos).transpose(1, 2)
        if y is None:
            if self.kv_cache is None or not self.cache_enabled:
                raise ValueError("Must provide y input or use kv_cache to enable streaming decoding")
            k, v = self.kv_cache.k_cache, self.kv_cache.v_cache
        else:
            s_y = y.shape[1]
            k = self.k_norm(self.k_proj(y).view(b, s_y, -1, self.head_dim))
            k = self.pos_embeddings(k, input_pos=input_pos).transpose(1, 2)
            v = self.v_proj(y).view(b, s_y, -1, self.head_dim).transpose(1, 2)
            if self.kv_cache is not None and self.cache_enabled:
                k, v = self.kv_cache.update(k, v)
        if self.num_heads != self.num_kv_heads:
            expand_shape = (b, self.num_kv_heads, q_per_kv, -1, self.head_dim)
            k = k.unsqueeze(2).expand(expand_shape).flatten(1, 2)
            v = v.unsqueeze(2).expand(expand_shape).flatten(1, 2)
        output = self._attention_call(
            q,
            k,
            v,
            mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=self.kv_cache is None and mask is None and self.is_causal,
        )
        return self.output_proj(output.transpose(1, 2).contiguous().view(b, s_x, -1))


def _linear(in_dim: int, out_dim: int, lora: dict | None) -> nn.Module:
    """torchtune's ``LoRALinear`` when ``lora`` ({rank, alpha, dropout}) is given, else a plain linear; no bias."""
    if lora is None:
        return nn.Linear(in_dim, out_dim, bias=False)
    from torchtune.modules.peft import LoRALinear

    return LoRALinear(in_dim, out_dim, rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"])


def _qwen3(
    *,
    lora: dict | None,
    lora_attn_modules=(),
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    head_dim: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 1_000_000.0,
    tie_word_embeddings: bool = False,
):
    from torchtune.models.qwen2._positional_embeddings import Qwen2RotaryPositionalEmbeddings
    from torchtune.modules import FeedForward, RMSNorm, TiedLinear, TransformerDecoder, TransformerSelfAttentionLayer

    def on(name: str):
        return lora if name in lora_attn_modules else None

    mlp_lora = lora if apply_lora_to_mlp else None
    rope = Qwen2RotaryPositionalEmbeddings(dim=head_dim, max_seq_len=max_seq_len, base=rope_base)
    layers = nn.ModuleList()
    for _ in range(num_layers):
        attn = NormBeforeRopeAttention(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            q_proj=_linear(embed_dim, num_heads * head_dim, on("q_proj")),
            k_proj=_linear(embed_dim, num_kv_heads * head_dim, on("k_proj")),
            v_proj=_linear(embed_dim, num_kv_heads * head_dim, on("v_proj")),
            output_proj=_linear(num_heads * head_dim, embed_dim, on("output_proj")),
            pos_embeddings=rope,
            q_norm=RMSNorm(dim=head_dim, eps=norm_eps),
            k_norm=RMSNorm(dim=head_dim, eps=norm_eps),
            max_seq_len=max_seq_len,
            attn_dropout=attn_dropout,
        )
        mlp = FeedForward(
            gate_proj=_linear(embed_dim, intermediate_dim, mlp_lora),
            down_proj=_linear(intermediate_dim, embed_dim, mlp_lora),
            up_proj=_linear(embed_dim, intermediate_dim, mlp_lora),
        )
        norms = {"sa_norm": RMSNorm(dim=embed_dim, eps=norm_eps), "mlp_norm": RMSNorm(dim=embed_dim, eps=norm_eps)}
        layers.append(TransformerSelfAttentionLayer(attn=attn, mlp=mlp, **norms))
    tok_embeddings = nn.Embedding(vocab_size, embed_dim)
    if tie_word_embeddings and apply_lora_to_output:
        raise ValueError("apply_lora_to_output is incompatible with tie_word_embeddings")
    output = (
        TiedLinear(tok_embeddings)
        if tie_word_embeddings
        else _linear(embed_dim, vocab_size, lora if apply_lora_to_output else None)
    )
    return TransformerDecoder(
        tok_embeddings=tok_embeddings,
        layers=layers,
        max_seq_len=max_seq_len,
        num_heads=num_heads,
        head_dim=head_dim,
        norm=RMSNorm(embed_dim, eps=norm_eps),
        output=output,
    )


def qwen3(**shape):
    """Qwen3 (dense): q/k RMSNorm per head before RoPE, its own head_dim, no attention bias."""
    return _qwen3(lora=None, **shape)


def lora_qwen3(
    lora_attn_modules,
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    *,
    lora_rank: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    **shape,
):
    """``qwen3`` with LoRA on the named attention projections, the MLP and the output."""
    return _qwen3(
        lora={"rank": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout},
        lora_attn_modules=tuple(lora_attn_modules),
        apply_lora_to_mlp=apply_lora_to_mlp,
        apply_lora_to_output=apply_lora_to_output,
        **shape,
    )


# -- Phi-3 with partial rotary, LongRoPE, tied embeddings (Phi-4-mini, Phi-3.5) ----------------


class PartialLongRope(nn.Module):
    """Hugging Face's Phi-3 RoPE: rotate-half on the first ``rotary_dim`` dims of each head
    (the rest passes through), frequencies divided by LongRoPE's short factors, cos/sin
    times its attention factor. Short factors are what HF uses while a sequence is at most
    ``original_max_position_embeddings`` long; the cache holds exactly those positions, so a
    longer sequence fails (index out of range) instead of silently using the wrong factors."""

    def __init__(self, rotary_dim: int, max_seq_len: int, base: float, short_factor=None, attention_factor: float = 1.0):
        super().__init__()
        self.rotary_dim = rotary_dim
        exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
        factors = torch.tensor(short_factor, dtype=torch.float32) if short_factor else torch.ones(rotary_dim // 2)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), 1.0 / (factors * base**exponents))
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos() * attention_factor, persistent=False)
        self.register_buffer("sin", angles.sin() * attention_factor, persistent=False)

    def forward(self, x: torch.Tensor, *, input_pos: torch.Tensor | None = None) -> torch.Tensor:
        """x: [b, s, heads, head_dim]; input_pos: [b, s] positions (None: 0..s-1)."""
        s = x.size(1)
        cos = (self.cos[:s] if input_pos is None else self.cos[input_pos]).view(-1, s, 1, self.rotary_dim)
        sin = (self.sin[:s] if input_pos is None else self.sin[input_pos]).view(-1, s, 1, self.rotary_dim)
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        half = self.rotary_dim // 2
        turned = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        return torch.cat((rot * cos.to(x.dtype) + turned * sin.to(x.dtype), rest), dim=-1)


def _phi3_rope_and_ties(model, *, rope_base, rotary_dim, rope_positions, short_factor, attention_factor, tie):
    from torchtune.modules import TiedLinear

    rope = PartialLongRope(rotary_dim, rope_positions, rope_base, short_factor, attention_factor)
    for layer in model.layers:
        layer.attn.pos_embeddings = rope
    if tie:
        del model.output  # a registered nn.Linear: unregister it before the plain TiedLinear takes the name
        model.output = TiedLinear(model.tok_embeddings)  # HF's lm_head is the embedding matrix
    return model


def phi3_longrope(
    *,
    rope_base: float = 10_000.0,
    rotary_dim: int,
    rope_positions: int,
    short_factor=None,
    attention_factor: float = 1.0,
    tie_word_embeddings: bool = False,
    **shape,
):
    """torchtune's ``phi3`` with partial rotary, LongRoPE (short factors) and optional tied embeddings."""
    from torchtune.models.phi3 import phi3

    model = phi3(rope_base=rope_base, **shape)
    return _phi3_rope_and_ties(
        model,
        rope_base=rope_base,
        rotary_dim=rotary_dim,
        rope_positions=rope_positions,
        short_factor=short_factor,
        attention_factor=attention_factor,
        tie=tie_word_embeddings,
    )


def lora_phi3_longrope(
    lora_attn_modules,
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    *,
    rope_base: float = 10_000.0,
    rotary_dim: int,
    rope_positions: int,
    short_factor=None,
    attention_factor: float = 1.0,
    tie_word_embeddings: bool = False,
    **shape,
):
    """``phi3_longrope`` with LoRA: torchtune's ``lora_phi3`` layers (separate q/k/v and gate/up)."""
    from torchtune.models.phi3 import lora_phi3

    if tie_word_embeddings and apply_lora_to_output:
        raise ValueError("apply_lora_to_output is incompatible with tie_word_embeddings")
    model = lora_phi3(lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output, rope_base=rope_base, **shape)
    return _phi3_rope_and_ties(
        model,
        rope_base=rope_base,
        rotary_dim=rotary_dim,
        rope_positions=rope_positions,
        short_factor=short_factor,
        attention_factor=attention_factor,
        tie=tie_word_embeddings,
    )


# -- Gemma with Hugging Face's activation; Gemma 2 with the final soft-capping on the logits ----


def _gelu(model, approximate: str):
    for layer in model.layers:
        layer.mlp.activation = nn.GELU(approximate=approximate)
    return model


def gemma(*, gelu_approximate: str = "tanh", **kwargs):
    """torchtune's ``gemma`` with the GELU config.json names (``none``: exact, ``tanh``)."""
    from torchtune.models.gemma._component_builders import gemma as tune_gemma

    return _gelu(tune_gemma(**kwargs), gelu_approximate)


def lora_gemma(lora_attn_modules, apply_lora_to_mlp: bool = False, *, gelu_approximate: str = "tanh", **kwargs):
    """torchtune's ``lora_gemma`` with the GELU config.json names."""
    from torchtune.models.gemma._component_builders import lora_gemma as tune_lora_gemma

    return _gelu(tune_lora_gemma(lora_attn_modules, apply_lora_to_mlp, **kwargs), gelu_approximate)


class SoftCappedOutput:
    """The output projection followed by ``cap * tanh(logits / cap)`` (Hugging Face's
    ``final_logit_softcapping``). A plain callable like torchtune's ``TiedLinear``, which it
    wraps: no parameters of its own, so the state dict keeps torchtune's names."""

    def __init__(self, output, cap: float):
        self.output, self.cap = output, cap

    def __call__(self, x):
        return torch.tanh(self.output(x) / self.cap) * self.cap


def _cap_logits(model, final_capping_value: float | None):
    model.norm.logit_capping = nn.Identity()  # torchtune caps the hidden state here: not what HF does
    if final_capping_value:
        model.output = SoftCappedOutput(model.output, final_capping_value)
    return model


def gemma2(*, final_capping_value: float | None = 30.0, gelu_approximate: str = "tanh", **kwargs):
    """torchtune's ``gemma2`` with the final soft-capping on the logits."""
    from torchtune.models.gemma2._component_builders import gemma2 as tune_gemma2

    model = tune_gemma2(final_capping_value=final_capping_value or 1.0, **kwargs)
    return _gelu(_cap_logits(model, final_capping_value), gelu_approximate)


def lora_gemma2(
    lora_attn_modules,
    apply_lora_to_mlp: bool = False,
    *,
    final_capping_value: float | None = 30.0,
    gelu_approximate: str = "tanh",
    **kwargs,
):
    """torchtune's ``lora_gemma2`` with the final soft-capping on the logits."""
    from torchtune.models.gemma2._component_builders import lora_gemma2 as tune_lora_gemma2

    model = tune_lora_gemma2(lora_attn_modules, apply_lora_to_mlp, final_capping_value=final_capping_value or 1.0, **kwargs)
    return _gelu(_cap_logits(model, final_capping_value), gelu_approximate)
