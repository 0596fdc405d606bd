"""Eval strategies at scale: per-adapter set-up (with a breakdown) and throughput
as a ratio to the bare base, on a random-weight base of a real model's shape.

    .venv/bin/python bench/scale.py --shape SHAPE [--adapters N]   (SHAPE: tiny, qwen0_5b, qwen1_5b, qwen7b,
        qwen3_8b, llama3_2_3b, mistral7b, gemma2_9b, phi3_mini, phi4_mini)
        [--strategies merge,merge_in_memory,peft_merge,direct,peft,base_loop,vllm] [--batches 1,32]
        [--new-tokens 8] [--rounds 2]

Nothing is downloaded: the base is built from the shape's config with kit's own
512-token tokenizer (``kit.core.model.tiny.build_tokenizer``), directly on the device in
the device's dtype (bf16 on CUDA, fp32 on CPU), then saved once as safetensors so
every strategy loads it as it would a real base. The N adapters are all-linear
LoRA on the decoder layers (q, k, v, o, gate, up, down; Phi: its fused qkv_proj and
gate_up_proj), ranks 16 and 64 in turn, with non-zero A and B.

Strategies: ``merge_in_memory`` and ``direct`` as kit runs them (``ResidentBase.generate``:
the fused LoRA path, merges by ``addmm_`` in place, kit's decode loop, CUDA-graph decode
steps on a GPU); ``peft``: the unmerged adapter through PEFT's own forward and HF
``generate`` (what ``direct`` was before the fused path: the reference it is compared
with); ``peft_merge``: ``merge_in_memory`` through PEFT's ``merge_adapter`` (a ``B @ A``
temporary per module: what it was before the in-place ``addmm_`` merge); ``base_loop``:
the bare base through kit's decode loop (what ``direct`` costs over the base in the same
loop); ``merge`` (to disk) and ``vllm``.

Per strategy:
- set-up per adapter: median over ``2 x N`` switches (every adapter twice, one
  attached at a time, so every switch is a real load), split into phases by timing
  kit's own functions: ``read`` (read_adapter + check_fits), ``attach`` (the PEFT
  load), ``fuse`` (copying the adapter into the fused LoRA buffers), ``snapshot``
  (the pristine copy, first merge only), ``merge``, ``restore`` (of the previous
  adapter's merge), ``check`` (after the restore); ``merge`` (to disk):
  ``merge_to_folder`` and the reload;
- tokens/s at each batch size, every sequence forced to ``--new-tokens`` tokens,
  as a ratio to the bare base (plain HF ``generate``) measured in the same rounds
  (median over rounds that run the strategy and the bare base in turn), and the
  decode time per token (a ``--new-tokens`` run minus a 1-token run, over the
  tokens between: the prefill taken out) and its ratio to the bare base's (per round,
  against the bare base's run just before it: the median and the range over rounds);
- temporary disk; peak memory (CUDA: max allocated during the strategy; CPU: the
  process's peak RSS so far, a coarse figure).

Sizing for ``--shape qwen7b --adapters 2`` on one H100 (bf16, 6.5B parameters,
~13 GB): build on the device ~5 s, save ~30 s, bare load ~10 s; merge_in_memory
and direct: 4 switches each, well under 5 s each with the device snapshot;
merge: 4 x (load + merge on the device + save 13 GB + reload) ~ 4 x 35 s;
throughput: 3 strategies x (rounds + 1) x 2 models x (b1 + b32) generate calls of
8 tokens, ~1 s each. About 4 minutes in all; ``--strategies`` leaves merge out
when time is short. Results go to bench/results/scale-<shape>.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's kit, not an installed one

QWEN2 = "Qwen2Config"
SHAPES = {  # (HF config class, shape) of real models; vocabulary replaced by kit's 512-token tokenizer
    "tiny": (
        QWEN2,
        dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    ),
    "qwen0_5b": (
        QWEN2,
        dict(
            tie_word_embeddings=True,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
        ),
    ),
    "qwen1_5b": (
        QWEN2,
        dict(
            tie_word_embeddings=True,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
        ),
    ),
    "qwen7b": (
        QWEN2,
        dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4),
    ),
    "qwen3_8b": (
        "Qwen3Config",
        dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
    "llama3_2_3b": (
        "LlamaConfig",
        dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8),
    ),
    "mistral7b": (
        "MistralConfig",
        dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
    ),
    "gemma2_9b": (
        "Gemma2Config",
        dict(
            hidden_size=3584,
            intermediate_size=14336,
            num_hidden_layers=42,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=256,
        ),
    ),
    "phi3_mini": (
        "Phi3Config",
        dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    ),
    "phi4_mini": (
        "Phi3Config",
        dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8),
    ),
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj")
RANKS = [16, 64]


# -- building the base and the adapters ----------------------------------------


def build_base(shape: str, out: Path, device: str, dtype: str) -> int:
    """A random-weight base of ``shape``, built on ``device`` in ``dtype``, saved to ``out``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    from kit.core.model.tiny import build_tokenizer

    out.mkdir(parents=True)
    ids = build_tokenizer(out, 512)
    config_class, dims = SHAPES[shape]
    config = getattr(transformers, config_class)(
        vocab_size=512,
        max_position_embeddings=4096,
        rope_theta=1e6,
        **{"tie_word_embeddings": False, **dims},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype=dtype,
    )
    torch.manual_seed(0)
    with torch.device(device):  # no host copy of a 7B model: init where it will run
        model = AutoModelForCausalLM.from_config(config, torch_dtype=getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(str(out), safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    del model
    return params


def build_adapter(base: Path, out: Path, rank: int, seed: int, dtype: str) -> None:
    """An all-linear LoRA adapter for ``base`` with non-zero A and B, in PEFT's folder format."""
    import torch
    import transformers
    from safetensors.torch import save_file

    config = transformers.AutoConfig.from_pretrained(str(base), local_files_only=True)
    with torch.device("meta"):  # the module names and sizes of this family, no memory
        layers = transformers.AutoModelForCausalLM.from_config(config).model.layers
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in layers.named_modules():
        if name.rsplit(".", 1)[-1] in TARGETS:
            key = f"base_model.model.model.layers.{name}"
            n_in, n_out = module.in_features, module.out_features
            tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, n_in, generator=gen) / n_in**0.5).to(getattr(torch, dtype))
            tensors[f"{key}.lora_B.weight"] = (torch.randn(n_out, rank, generator=gen) * 0.01).to(getattr(torch, dtype))
    targets = sorted({k.split(".")[-3] for k in tensors})
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": rank,
                "lora_alpha": 2 * rank,
                "lora_dropout": 0.0,
                "bias": "none",
                "fan_in_fan_out": False,
                "inference_mode": True,
                "base_model_name_or_path": None,
                "target_modules": targets,
            },
            indent=1,
        )
    )


# -- timing kit's own functions by phase ---------------------------------------


class Phases:
    """Wraps named functions so their wall time adds up per phase (with a CUDA sync);
    exclusive: time in a wrapped function called by another counts for the inner one only."""

    def __init__(self, cuda: bool):
        self.cuda, self.times, self._undo, self._inner = cuda, defaultdict(float), [], [0.0]

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, owner, attr: str, phase: str) -> None:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None:
            return  # not in this version of kit
        func = original.__func__ if isinstance(original, (classmethod, staticmethod)) else original
        phases = self

        def timed(*args, **kwargs):
            phases._sync()
            start = time.perf_counter()
            phases._inner.append(0.0)
            try:
                return func(*args, **kwargs)
            finally:
                phases._sync()
                spent = time.perf_counter() - start
                phases.times[phase] += spent - phases._inner.pop()
                phases._inner[-1] += spent

        setattr(owner, attr, classmethod(timed) if isinstance(original, classmethod) else timed)
        self._undo.append((owner, attr, original))

    def take(self) -> dict:
        times, self.times = dict(self.times), defaultdict(float)
        return times

    def undo(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def resident_phases(cuda: bool) -> Phases:
    import peft.tuners.tuners_utils as tuners

    from kit.core.model import snapshot
    from kit.lora import resident

    p = Phases(cuda)
    p.wrap(resident, "read_adapter", "read")
    p.wrap(resident, "check_fits", "read")
    p.wrap(resident, "read_tensors", "read")  # read straight onto the device for reused modules
    p.wrap(resident.ResidentBase, "_load", "attach")
    p.wrap(resident.ResidentBase, "_refill", "attach")  # copy into spare LoRA modules
    p.wrap(resident.ResidentBase, "_stash", "attach")  # evict into the spares
    try:
        from kit.lora import fused

        p.wrap(fused.FusedLora, "load", "fuse")  # the fused LoRA buffers
        p.wrap(fused.FusedLora, "merge", "merge")  # the in-place addmm_ merge
    except ImportError:  # kit before the fused path
        pass
    p.wrap(snapshot.Snapshot, "take", "snapshot")
    p.wrap(tuners.BaseTuner, "merge_adapter", "merge")
    p.wrap(snapshot.Snapshot, "restore", "restore")
    p.wrap(resident, "fingerprint", "check")  # older kit: sha256 on the CPU
    p.wrap(snapshot.Snapshot, "verify", "check")  # after: an on-device checksum
    return p


# -- measuring -------------------------------------------------------------------


def peak_memory(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def prompts(tokenizer, batch: int, device: str):
    numbers = range(10_000, 10_000 + batch)
    chats = [
        tokenizer.apply_chat_template([{"role": "user", "content": f"Is {n} even?"}], tokenize=False, add_generation_prompt=True)
        for n in numbers
    ]
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def timed_generate(generate, inputs, new_tokens: int) -> float:
    """Seconds for one ``generate`` call of ``new_tokens`` forced tokens."""
    import torch

    cuda = inputs["input_ids"].is_cuda
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        out = generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if cuda:
        torch.cuda.synchronize()
    assert out.shape[1] - inputs["input_ids"].shape[1] == new_tokens, out.shape
    return time.perf_counter() - start


def ratios(bare, generate, prepare, inputs_by_batch: dict, new_tokens: int, rounds: int) -> dict:
    """Per batch size: tok/s of ``generate`` and of the bare base's ``generate`` (rounds alternate the
    two), their ratio, and the decode time per token (a run of ``new_tokens`` minus a 1-token run)."""
    out = {}
    for batch, inputs in inputs_by_batch.items():
        full, first = {"base": [], "strategy": []}, {"base": [], "strategy": []}
        for r in range(rounds + 1):
            for name, gen in (("base", bare.generate), ("strategy", generate)):
                if name == "strategy":
                    prepare()
                t_full = timed_generate(gen, inputs, new_tokens)
                t_one = timed_generate(gen, inputs, 1)
                if r:  # round 0 warms up
                    full[name].append(t_full)
                    first[name].append(t_one)
        row = {}
        for name in ("base", "strategy"):
            t_full, t_one = statistics.median(full[name]), statistics.median(first[name])
            row[name] = {
                "tok_s": batch * new_tokens / t_full,
                "decode_ms_per_token": 1000 * max(t_full - t_one, 0.0) / max(new_tokens - 1, 1),
            }
        base, strat = row["base"], row["strategy"]
        paired = sorted(  # per round: the strategy's decode time over the bare base's just before it
            max(fs - os_, 0.0) / max(fb - ob, 1e-9)
            for fs, os_, fb, ob in zip(full["strategy"], first["strategy"], full["base"], first["base"])
        )
        out[f"b{batch}"] = {
            "tok_s": strat["tok_s"],
            "base_tok_s": base["tok_s"],
            "ratio": strat["tok_s"] / base["tok_s"],
            "decode_ms_per_token": strat["decode_ms_per_token"],
            "base_decode_ms_per_token": base["decode_ms_per_token"],
            "decode_time_ratio": statistics.median(paired),  # robust to the machine's drift between rounds
            "decode_time_ratio_range": [paired[0], paired[-1]],
            "decode_time_ratio_of_medians": strat["decode_ms_per_token"] / max(base["decode_ms_per_token"], 1e-9),
        }
    return out


def median_phases(per_switch: list[dict]) -> dict:
    names = sorted({k for t in per_switch for k in t})
    return {k: statistics.median(t.get(k, 0.0) for t in per_switch) for k in names}


def bench_resident(
    base: Path, adapters: list[Path], merged: bool, device: str, dtype: str, fused: bool = True
) -> tuple[dict, object]:
    """merge_in_memory (merged=True), direct or peft (fused=False): 2 x N switches, one adapter attached at a time."""
    from kit.lora.resident import ResidentBase

    start = time.perf_counter()
    kwargs = {"fused": fused} if "fused" in inspect.signature(ResidentBase).parameters else {}
    resident = ResidentBase(base, device, dtype, max_adapters=1, **kwargs)
    load_s = time.perf_counter() - start
    phases = resident_phases(device.startswith("cuda"))
    try:
        totals, per_switch, once = [], [], {}
        for i, adapter in enumerate(adapters * 2):
            start = time.perf_counter()
            with resident.lock:
                resident.activate(resident.attach(adapter), merged=merged, check=True)
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            totals.append(time.perf_counter() - start)
            times = phases.take()
            times["other"] = totals[-1] - sum(times.values())  # PEFT set_adapter, module walks, bookkeeping
            if "snapshot" in times:
                once["snapshot"] = times.pop("snapshot")
            per_switch.append(times)
            if i == 0:
                once["first_switch_s"] = totals.pop()  # wraps the base in PEFT layers: a one-off
                per_switch.pop()
        with resident.lock:
            resident.restore(check=True)
        last_restore = phases.take()
    finally:
        phases.undo()
    row = {
        "resident_load_s": load_s,
        "setup_s": statistics.median(totals),
        "breakdown_s": median_phases(per_switch),
        "once_s": once,
        "final_restore_s": last_restore,
        "temp_bytes": 0,
    }
    return row, resident


def bench_merge(base: Path, adapters: list[Path], device: str, dtype: str) -> tuple[dict, object]:
    """merge to disk: merge_to_folder + reload, per adapter; keeps the last merged model."""
    from kit.core.model.loader import load_model
    from kit.lora.merge import merge_to_folder
    from kit.train.export import folder_bytes

    per, totals, temp, model = [], [], 0, None
    for adapter in adapters:
        tmp = Path(tempfile.mkdtemp(prefix="kit-scale-merged-", dir=base.parent))
        try:
            model = None
            start = time.perf_counter()
            if "device" in inspect.signature(merge_to_folder).parameters:  # merged on the device
                merge_to_folder(base, adapter, tmp, device, dtype)
            else:  # older kit: fp32 on the CPU
                merge_to_folder(base, adapter, tmp)
            merged = time.perf_counter()
            model = load_model(tmp, dtype=dtype, device=device)
            done = time.perf_counter()
            per.append({"merge_to_folder": merged - start, "reload": done - merged})
            totals.append(done - start)
            temp = max(temp, folder_bytes(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"setup_s": statistics.median(totals), "breakdown_s": median_phases(per), "temp_bytes": temp}, model


def run(args) -> dict:
    import torch

    from kit.core.model.loader import load_model, load_tokenizer
    from kit.train.export import folder_bytes

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    short = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    work = Path(tempfile.mkdtemp(prefix="kit-scale-", dir=args.tmp))
    result = {
        "shape": args.shape,
        "device": device,
        "dtype": dtype,
        "adapters": args.adapters,
        "batches": args.batches,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "threads": torch.get_num_threads(),
        "strategies": {},
    }
    try:
        start = time.perf_counter()
        result["parameters"] = build_base(args.shape, work / "base", device, dtype)
        result["build_s"] = time.perf_counter() - start
        result["base_bytes"] = folder_bytes(work / "base")
        adapters = [work / f"adapter{i}" for i in range(args.adapters)]
        for i, folder in enumerate(adapters):
            build_adapter(work / "base", folder, RANKS[i % len(RANKS)], i, dtype)
        start = time.perf_counter()
        bare = load_model(work / "base", dtype=dtype, device=device)
        result["base_load_s"] = time.perf_counter() - start
        tokenizer = load_tokenizer(work / "base")
        inputs = {b: prompts(tokenizer, b, device) for b in args.batches}
        for name in args.strategies:
            print(f"[scale] {name} ...", file=sys.stderr, flush=True)
            reset_peak(device)
            row = measure_strategy(name, work / "base", adapters, bare, inputs, args, device, short)
            row["peak_memory_bytes"] = peak_memory(device)
            result["strategies"][name] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    return result


def measure_strategy(name: str, base: Path, adapters: list[Path], bare, inputs, args, device: str, short: str) -> dict:
    import gc
    import importlib.util

    from kit.core.device import DTYPES

    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return {"skipped": "vllm not installed here"}
        return {"skipped": "vllm: run bench/eval_strategies.py on the GPU machine (vLLM's own engine)"}
    if name == "merge":
        row, model = bench_merge(base, adapters, device, DTYPES[short].torch_name)
        row["throughput"] = ratios(bare, model.generate, lambda: None, inputs, args.new_tokens, args.rounds)
        del model
        gc.collect()
        return row
    if name == "base_loop":  # the bare base through kit's decode loop
        from kit.lora.resident import ResidentBase

        resident = ResidentBase(base, device, short)
        generate = lambda **kw: resident.generate(None, **kw)  # noqa: E731
        row = {"setup_s": 0.0, "breakdown_s": {}, "temp_bytes": 0}
        row["throughput"] = ratios(bare, generate, lambda: None, inputs, args.new_tokens, args.rounds)
        resident = generate = None
        gc.collect()
        return row
    merged = name in ("merge_in_memory", "peft_merge")
    fused = name not in ("peft", "peft_merge")  # PEFT's own forward / merge_adapter: the before figures
    row, resident = bench_resident(base, adapters, merged, device, short, fused=fused)
    with resident.lock:
        last = resident.attach(adapters[-1])
        prepare = lambda: resident.activate(last, merged=merged, check=False)  # noqa: E731
        if hasattr(resident, "generate"):  # kit's own path: fused LoRA, decode loop, CUDA graphs
            generate = lambda **kw: resident.generate(last, merged, False, **kw)  # noqa: E731
        else:  # kit before the fused path
            generate = lambda **kw: resident.forward_model(last).generate(**kw)  # noqa: E731
        row["throughput"] = ratios(bare, generate, prepare, inputs, args.new_tokens, args.rounds)
        resident.restore(check=True)
        decoder = resident.decoder() if hasattr(resident, "decoder") and fused else None
        row["cuda_graphs_recorded"] = decoder.captures if decoder is not None else 0
    resident = prepare = generate = None  # free the base before the next strategy builds its own
    gc.collect()
    return row


def table(result: dict) -> str:
    lines = [
        f"shape {result['shape']} ({result['parameters'] / 1e9:.2f}B parameters, {result['base_bytes'] / 1e9:.2f} GB), "
        f"{result['device']} {result['dtype']}, {result['adapters']} adapters (r16/r64 all-linear), "
        f"{result['new_tokens']} new tokens, {result['rounds']} rounds, {result['threads']} threads; "
        f"build {result['build_s']:.1f} s, bare load {result['base_load_s']:.1f} s; load average "
        f"{result['load_average'][0]:.1f} -> {result['load_average_after'][0]:.1f}",
        "",
        "| strategy | set-up s / adapter (median) | breakdown s (median per switch) | once | "
        + " | ".join(f"b{b} tok/s (vs base) | b{b} decode ms/token (vs base, range over rounds)" for b in result["batches"])
        + " | temp disk | peak mem |",
        "|---|---|---|---|" + "---|---|" * len(result["batches"]) + "---|---|",
    ]
    for name, r in result["strategies"].items():
        if "skipped" in r:
            lines.append(f"| {name} | not run: {r['skipped']} |")
            continue
        parts = ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown_s"].items())
        once = ", ".join(f"{k} {v:.2f}" for k, v in r.get("once_s", {}).items()) or "-"
        speeds = " | ".join(
            f"{t['tok_s']:.1f} ({t['ratio']:.2f}x) | {t['decode_ms_per_token']:.1f} ({t['decode_time_ratio']:.2f}x, "
            f"{t['decode_time_ratio_range'][0]:.2f}-{t['decode_time_ratio_range'][1]:.2f})"
            for t in r["throughput"].values()
        )
        lines.append(
            f"| {name} | {r['setup_s']:.3f} | {parts} | {once} | {speeds} | "
            f"{r['temp_bytes'] / 1e9:.2f} GB | {r['peak_memory_bytes'] / 2**30:.1f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--adapters", type=int, default=2)
    p.add_argument("--strategies", default="merge,merge_in_memory,peft_merge,direct,peft,base_loop,vllm")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--tmp", default=None, help="where the base and adapters are written (default: system tmp)")
    p.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/scale-<shape>.json)")
    args = p.parse_args()
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.batches = [int(b) for b in args.batches.split(",")]
    result = run(args)
    print(table(result))
    out = args.out or ROOT / "bench" / "results" / f"scale-{args.shape}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
