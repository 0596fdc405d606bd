"""What ``eval=auto`` measures: time and agreement of the candidate strategies on this machine.

The candidates are the two that run on the resident base the eval loads anyway, so measuring
them loads nothing more: ``direct`` (unmerged) and ``merge_in_memory`` (merged into the base,
restored bit-exactly after). ``merge`` is not measured: it computes the same merged weights as
``merge_in_memory`` and adds a save and a reload of the whole model, so it is never the faster
one. ``vllm`` is not measured either (it needs its own server; name it with ``eval=vllm``).

For each candidate, on the first ``PROBE_SAMPLES`` samples of the eval's tasks (their prompts
through the chat template, greedy, ``eval.max_tokens`` new tokens, one left-padded batch):
the seconds to make it compute (``setup_s``: the in-memory merge and restore; none for direct)
and to generate the batch (``batch_s``, the faster of two runs), and the tokens it generated.
A candidate whose tokens differ from ``merge_in_memory``'s (the merged model, what
``eval=merge`` and a full checkpoint compute) on any probe sample is not chosen. Of the others,
the one with the smallest predicted model time for this eval wins: ``setup_s + batch_s *
batches``, ``batches`` = the eval's samples / ``PROBE_SAMPLES`` (Inspect's own overhead is the
same for both and left out). ``direct`` must be faster by more than ``TIE`` (10 %) to win:
within the noise of one measurement, the merged model is kept.

The measurement is cached under ``$KIT_CACHE/auto/<key>.json``, keyed by the base's content
(kit.eval.score_key.base_files), the device (and GPU name), dtype, the adapter's shapes and
LoRA settings, ``max_tokens`` and the versions of the stack: every later job of that kind on
this machine reuses it and pays nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

from kit.core.device import resolve_device, resolve_dtype
from kit.core.folders import cache_root
from kit.core.versions import stack_versions
from kit.eval.score_key import base_files, device_name, kit_source
from kit.lora.resident import read_adapter, signature

PROBE_SAMPLES = 4
CANDIDATES = ("direct", "merge_in_memory")
REFERENCE = "merge_in_memory"  # the merged model: what eval=merge and a full checkpoint compute
TIE = 0.10  # another candidate must beat the merged model's predicted time by this share


def task_samples(specs: list[str], limit) -> tuple[list, int]:
    """(the first PROBE_SAMPLES samples' inputs, how many samples the eval scores)."""
    from inspect_ai._eval.loader import load_tasks

    inputs, total = [], 0
    for spec in specs:
        for task in load_tasks([spec], {}):
            n = len(task.dataset) if limit is None else min(int(limit), len(task.dataset))
            total += n * (task.epochs if isinstance(task.epochs, int) else 1)
            inputs += [s.input for s in list(task.dataset)[: max(0, PROBE_SAMPLES - len(inputs))]]
    return inputs, total


def prompt_ids(tokenizer, sample_input) -> list[int]:
    if isinstance(sample_input, str):
        messages = [{"role": "user", "content": sample_input}]
    else:
        messages = [{"role": m.role, "content": m.text} for m in sample_input]
    if tokenizer.chat_template:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return tokenizer("\n".join(m["content"] for m in messages))["input_ids"]


def generate(resident, name: str, ids: list[list[int]], max_tokens: int) -> tuple[float, list[list[int]]]:
    import torch

    tok = resident.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, ids))
    device = next(resident.model.parameters()).device
    batch = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = resident.forward_model(name).generate(
            input_ids=batch, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out[:, width:].tolist()


def measure(resident, adapter, ids: list[list[int]], max_tokens: int) -> dict:
    """Each candidate's setup and batch seconds and its tokens (interleaved, best of two)."""
    runs = {c: {"setup_s": 0.0, "batch_s": math.inf, "tokens": None} for c in CANDIDATES}
    with resident.lock:
        name = resident.attach(adapter)
        try:
            for _ in range(2):
                for c in CANDIDATES:
                    start = time.perf_counter()
                    resident.activate(name, merged=c == "merge_in_memory")
                    setup = time.perf_counter() - start
                    seconds, tokens = generate(resident, name, ids, max_tokens)
                    start = time.perf_counter()
                    resident.restore()
                    setup += time.perf_counter() - start
                    r = runs[c]
                    r["setup_s"] = setup if r["tokens"] is None else min(r["setup_s"], setup)
                    r["batch_s"], r["tokens"] = min(r["batch_s"], seconds), tokens
        finally:
            resident.restore()
    return runs


def cache_key(ctx, adapter_sig: str, device: str, dtype: str) -> str:
    ident = {
        "base": base_files(ctx.base),
        "device": device_name(device),
        "dtype": dtype,
        "adapter": adapter_sig,
        "max_tokens": int(ctx.eval_cfg.max_tokens),
        "probe_samples": PROBE_SAMPLES,
        "versions": stack_versions(),
        "kit_source": kit_source(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def measured(ctx, resident) -> dict:
    """The candidates' figures for this base, device, dtype and adapter shape (cached)."""
    device = resolve_device(ctx.eval_cfg.device)
    dtype = resolve_dtype(ctx.eval_cfg.dtype, device)
    config, shapes = read_adapter(ctx.checkpoint_path, read_all=False)
    key = cache_key(ctx, signature(config, shapes), device, dtype)
    path = cache_root() / "auto" / f"{key}.json"
    try:
        record = json.loads(path.read_text())
        if set(record.get("candidates", {})) == set(CANDIDATES):
            return {**record, "cached": True, "key": key}
    except (OSError, ValueError):
        pass
    inputs, _ = task_samples(list(ctx.tasks), ctx.limit)
    ids = [prompt_ids(resident.tokenizer, i) for i in inputs]
    start = time.perf_counter()
    runs = measure(resident, ctx.checkpoint_path, ids, int(ctx.eval_cfg.max_tokens))
    ref = runs[REFERENCE]["tokens"]
    candidates = {
        c: {
            "setup_s": round(r["setup_s"], 4),
            "batch_s": round(r["batch_s"], 4),
            "agrees_with_merged": sum(a == b for a, b in zip(r["tokens"], ref)),
        }
        for c, r in runs.items()
    }
    record = {
        "candidates": candidates,
        "probe_samples": len(ids),
        "device": device_name(device),
        "dtype": dtype,
        "measure_s": round(time.perf_counter() - start, 3),
    }
    write(path, record)
    return {**record, "cached": False, "key": key}


def write(path, record: dict) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)
    except OSError:  # a full or read-only cache: the next job measures again
        tmp.unlink(missing_ok=True)


def decide(record: dict, eval_samples: int) -> tuple[str, str, dict]:
    """(strategy, why, evidence) from the measured figures and this eval's size."""
    k = max(1, record["probe_samples"])
    batches = max(1, math.ceil(eval_samples / k))
    evidence = {**record, "eval_samples": eval_samples, "predicted_s": {}}
    agreeing = []
    for c, f in record["candidates"].items():
        evidence["predicted_s"][c] = round(f["setup_s"] + f["batch_s"] * batches, 3)
        if f["agrees_with_merged"] == record["probe_samples"]:
            agreeing.append(c)
    predicted = evidence["predicted_s"]
    best = min(agreeing or [REFERENCE], key=lambda c: predicted[c] * (1 if c == REFERENCE else 1 + TIE))
    others = ", ".join(f"{c} {evidence['predicted_s'][c]:.2f} s" for c in record["candidates"] if c != best)
    disagree = [c for c in record["candidates"] if c not in agreeing]
    why = (
        f"measured on this machine ({record['device']}, {record['dtype']}{', cached' if record.get('cached') else ''}): "
        f"{best} predicted {evidence['predicted_s'][best]:.2f} s for {eval_samples} samples against {others}"
        + (f"; {disagree} gave other tokens than the merged model on the probes" if disagree else "; same tokens on the probes")
    )
    return best, why, evidence
