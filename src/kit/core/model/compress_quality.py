"""How much a compressed base differs from its source: next-token KL divergence and perplexity on
held-out text, both models run in float32 on the same tokens (the compressed one over ``dequant(Wq)``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from kit.core.errors import KitError
from kit.core.model.compress import dequantized_state


def load_compressed(folder: Path):
    """A transformers model of the compressed folder's config over its dequantized weights (float32)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # buffers (RoPE) built, weights replaced
    state = {k: v.float() for k, v in dequantized_state(folder).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise KitError(f"{str(folder)!r}: weights do not fit its config (missing {missing}, unexpected {unexpected})")
    if missing:
        model.tie_weights()
    return model.eval()


def timed_load(folder: Path):
    started = time.perf_counter()
    model = load_compressed(folder)
    return model, time.perf_counter() - started


@torch.no_grad()
def kl_and_perplexity(source, compressed, tokenizer, texts: list[str]) -> dict:
    """Mean next-token KL(source || compressed) per token, and each model's perplexity on ``texts``."""
    kl_sum, nll = 0.0, {"source": 0.0, "compressed": 0.0}
    tokens = 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        if ids.shape[1] < 2:
            continue
        models = {"source": source, "compressed": compressed}
        logp = {k: torch.log_softmax(m(ids).logits[0, :-1].float(), -1) for k, m in models.items()}
        target = ids[0, 1:]
        kl_sum += (logp["source"].exp() * (logp["source"] - logp["compressed"])).sum().item()
        for k in nll:
            nll[k] -= logp[k].gather(1, target[:, None]).sum().item()
        tokens += target.numel()
    if not tokens:
        raise KitError("no held-out text of two or more tokens to measure compression quality on")
    return {
        "kl": kl_sum / tokens,
        "ppl_source": math.exp(nll["source"] / tokens),
        "ppl_compressed": math.exp(nll["compressed"] / tokens),
        "tokens": tokens,
    }
