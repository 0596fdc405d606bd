"""A tiny offline model of every family kit trains, for tests and for trying a family on a CPU.

Each is built with transformers' own config and model class of its family (``Qwen3Config``,
``MistralConfig``, ``GemmaConfig``, ``Gemma2Config``, ``Phi3Config``, ``LlamaConfig``), random
weights from a fixed seed, a byte-level BPE tokenizer trained on the bundled data (digits split
one by one, the family's special tokens) and the family's chat template (Mistral: none, as
Mistral-7B-v0.3 base, so it takes kit's plain prompt format). The shapes keep what makes each
family different from the others: Qwen3's and Gemma's head_dim != hidden / heads and tied
embeddings, Gemma 2's soft-capping, sliding window and query scalar, Phi-4-mini's partial rotary,
LongRoPE and tied embeddings, Llama 3.2's scaled RoPE. Cached like the default tiny Qwen2
(kit.core.model.tiny: ``tiny_model_dir``, keyed by a hash of the spec).

    from kit.core.model.tiny import tiny_family_dir
    base = tiny_family_dir("gemma2")      # then: python -m kit train model.path=<base> ...
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.core.errors import KitError

# Qwen2's pre-tokenizer regex (digits split one by one), shared with torchtune; every tiny tokenizer uses it.
QWEN2_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SHAPE = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    # weights drawn at std 0.1 (HF's default 0.02): with hidden 64 the layers' outputs are then not
    # drowned by the residual stream, and LoRA learns the parity task in the default 248 steps
    # (at 0.02 the tiny Llama 2 and Mistral stayed at 0.50, always one answer)
    "initializer_range": 0.1,
}
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
PHI4 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# family -> (HF config class, config keys beyond SHAPE, chat template or None, special tokens: bos, eos, pad, others)
FAMILIES = {
    "qwen3": (
        "Qwen3Config",
        {"head_dim": 32, "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
        CHATML,
        (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
    ),
    "llama3": (
        "LlamaConfig",
        {
            "tie_word_embeddings": True,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 16384,  # above rope_scaling's original 8192, as in real configs
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        },
        LLAMA3,
        ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    ),
    "llama2": (
        "LlamaConfig",
        {"tie_word_embeddings": False, "rope_theta": 10000.0, "rms_norm_eps": 1e-5},
        LLAMA2,
        ("<s>", "</s>", "<unk>", []),
    ),
    "mistral": (
        "MistralConfig",
        {"tie_word_embeddings": False, "rope_theta": 1000000.0, "sliding_window": None, "rms_norm_eps": 1e-5},
        None,
        ("<s>", "</s>", "<unk>", []),
    ),
    "gemma": (
        "GemmaConfig",
        {
            "head_dim": 32,
            "num_key_value_heads": 1,
            "hidden_act": "gelu_pytorch_tanh",
            "rms_norm_eps": 1e-6,
            "initializer_range": 0.2,
        },
        GEMMA,
        ("<bos>", "<end_of_turn>", "<pad>", ["<eos>", "<start_of_turn>"]),
    ),
    "gemma2": (
        "Gemma2Config",
        {
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 8,
            "rms_norm_eps": 1e-6,
        },
        GEMMA,
        ("<bos>", "<end_of_turn>", "<pad>", ["<eos>", "<start_of_turn>"]),
    ),
    "phi3": (
        "Phi3Config",
        {"tie_word_embeddings": False, "rope_theta": 10000.0, "sliding_window": 2047, "rms_norm_eps": 1e-5},
        PHI3,
        ("<s>", "<|end|>", "<|endoftext|>", ["<|user|>", "<|assistant|>", "<|system|>"]),
    ),
    "phi4": (
        "Phi3Config",
        {
            "tie_word_embeddings": True,
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": 64,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                "long_factor": [1.0, 2.0, 4.0, 8.0, 12.0, 16.0],
            },
            "sliding_window": None,
            "rms_norm_eps": 1e-5,
        },
        PHI4,
        ("<|endoftext|>", "<|end|>", "<|dummy_pad|>", ["<|user|>", "<|assistant|>", "<|system|>"]),
    ),
}
VERSION = 2
# A tied output layer scores a normed hidden state h (|h| = sqrt(hidden)) against the embedding rows: at
# HF's init (std 0.02) and hidden 64 no logit can exceed 8 * 0.02 * 8 = 1.3, so no LoRA inside the layers can
# make one answer likely (the loss stays near ln(vocab)). Real models' embeddings allow margins of tens;
# std 0.15 gives the tiny tied models room for real margins (8 * 0.15 * 8 = 9.6).
TIED_EMBEDDING_STD = 0.15


def tiny_spec(family: str) -> dict:
    if family not in FAMILIES:
        raise KitError(f"no tiny model for family {family!r}; expected one of {sorted(FAMILIES)} (or 'qwen2', the default)")
    config_class, extra, _, _ = FAMILIES[family]
    spec = {"family": family, "config_class": config_class, **SHAPE, **extra, "seed": 0, "version": VERSION}
    if extra.get("tie_word_embeddings", family.startswith("gemma")):
        spec.setdefault("embedding_std", TIED_EMBEDDING_STD)
    return spec


def build_tokenizer(out: Path, family: str, vocab_size: int) -> dict[str, int]:
    """Byte-level BPE with Qwen2's digit-splitting pre-tokenizer, the family's special tokens and
    chat template, saved as tokenizer.json + tokenizer_config.json (no torchtune tokenizer files)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from kit.core.data import corpus_lines

    _, _, template, (bos, eos, pad, others) = FAMILIES[family]
    specials = [t for t in (bos, eos, pad, *others) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=others,
        model_input_names=["input_ids", "attention_mask"],  # as decoder-only tokenizers: no token_type_ids
    )
    if template is not None:
        hf_tok.chat_template = template
    hf_tok.save_pretrained(str(out))
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in specials}
    if max(ids.values()) >= vocab_size:
        raise RuntimeError(f"tiny tokenizer needs {max(ids.values()) + 1} ids > {vocab_size}")
    return {"bos": ids.get(bos), "eos": ids[eos], "pad": ids[pad]}


def build_family_model(out: Path, spec: dict) -> None:
    import torch
    import transformers

    ids = build_tokenizer(out, spec["family"], spec["vocab_size"])
    keys = {k: v for k, v in spec.items() if k not in ("family", "config_class", "seed", "version", "embedding_std")}
    config = getattr(transformers, spec["config_class"])(
        **keys, bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], torch_dtype="float32"
    )
    torch.manual_seed(spec["seed"])
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    if "embedding_std" in spec:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, spec["embedding_std"])
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]
    )
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "kit_tiny_spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
