"""The embedded default model: a tiny Qwen2-family causal LM built offline (tiny models of the
other families: kit.core.model.tiny_families, cached the same way).

Everything is deterministic (fixed corpus, fixed seed), so the same folder is
produced on every machine; it is cached under ``$KIT_CACHE`` (default
``~/.cache/kit``) keyed by a hash of the spec. Nothing is downloaded: the
tokenizer is trained with ``tokenizers`` and the weights come from a seeded
random init saved as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from kit.core.data import corpus_lines
from kit.core.errors import disk_full
from kit.core.folders import build_atomically, cache_root
from kit.core.model.tiny_families import QWEN2_PRETOKENIZE, build_family_model, tiny_spec

# Shape of the tiny model. Changing it changes the cache key.
TINY_SPEC = {
    "family": "qwen2",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "seed": 0,
    "version": 1,
}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML without a default system prompt: exactly what torchtune's Qwen2
# tokenizer produces for training, so eval prompts match training prompts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def tiny_model_dir(spec: dict | None = None) -> Path:
    """Return the folder of the tiny model, building it on first use (and again if the cached
    copy is damaged: a cache is rebuilt, never trusted blindly)."""
    spec = dict(TINY_SPEC if spec is None else spec)
    target = cache_root() / f"tiny-{spec['family']}-{spec_hash(spec)}"
    if intact(target):
        return target
    if target.exists():
        print(f"kit: warning: cached tiny model {target} is damaged; building it again", file=sys.stderr)
        discard(target)
    try:
        build_into(target, spec)
    except OSError as e:
        raise (disk_full(e) or e) from None
    return target


def tiny_family_dir(family: str) -> Path:
    """The cached tiny model of ``family`` (the default tiny Qwen2 for ``qwen2``), built on first use."""
    return tiny_model_dir(None if family == "qwen2" else tiny_spec(family))


def intact(target: Path) -> bool:
    """Built to the end (the spec file is written last) and its config and weights readable."""
    from safetensors import safe_open

    try:
        json.loads((target / "kit_tiny_spec.json").read_text())
        json.loads((target / "config.json").read_text())
        with safe_open(str(target / "model.safetensors"), framework="pt") as f:
            list(f.keys())
    except Exception:  # missing, truncated or garbled: any of them means rebuild
        return False
    return True


def discard(target: Path) -> None:
    """Move a damaged cache entry out of the way first (atomic), then delete it."""
    gone = target.with_name(f".damaged-{target.name}-{os.getpid()}")
    try:
        target.rename(gone)
    except OSError:  # another process moved it already
        return
    shutil.rmtree(gone, ignore_errors=True)


def build_into(target: Path, spec: dict) -> None:
    build_atomically(target, lambda scratch: build_tiny_model(scratch, spec), ".tiny-")


def _tokenizer_corpus() -> list[str]:

    return corpus_lines()


def build_tokenizer(out: Path, vocab_size: int) -> dict[str, int]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer; save HF and torchtune files."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    n_regular = vocab_size - len(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=n_regular,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    model_files = tok.model.save(str(out))  # vocab.json, merges.txt
    vocab_file, merges_file = sorted(model_files, key=lambda p: p.endswith("merges.txt"))
    hf_tok = Qwen2TokenizerFast(
        vocab_file=vocab_file,
        merges_file=merges_file,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(str(out))
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if max(ids.values()) >= vocab_size:
        raise RuntimeError(f"tiny tokenizer needs {max(ids.values()) + 1} ids > {vocab_size}")
    return ids


def build_tiny_model(out: Path, spec: dict) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if spec["family"] != "qwen2":  # the tiny model of another family (kit.core.model.tiny_families)
        return build_family_model(out, spec)
    ids = build_tokenizer(out, spec["vocab_size"])
    config = Qwen2Config(
        vocab_size=spec["vocab_size"],
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        rope_theta=spec["rope_theta"],
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="float32",
    )
    torch.manual_seed(spec["seed"])
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "kit_tiny_spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
