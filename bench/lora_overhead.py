"""Why unmerged LoRA (``eval=direct``) decodes slower than the bare base: time and
top-level aten ops of one decode step, base vs PEFT's unmerged LoRA, on a random
model with a real model's layer shapes.

    .venv/bin/python bench/lora_overhead.py [--layers 4] [--rank 64] [--batches 1,32]

Each LoRA'd Linear adds its own small kernels per step (PEFT: lora_A matmul,
lora_B matmul, scale, add; plus input/output casts when the adapter is kept in
fp32 under a bf16 base): ops per step grow by that count times the number of LoRA
modules (7 per layer all-linear: 196 at the 7B shape), whatever their FLOPs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def decode_step(model, batch: int, steps: int = 6) -> tuple[float, int]:
    """(median seconds, top-level aten ops) of one cached decode step at ``batch``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(0, 512, (batch, 16))
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        nxt = torch.randint(0, 512, (batch, 1))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
    ops = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)
    return statistics.median(times[1:]), ops


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4, help="of the qwen0_5b shape (24 in the real model)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--batches", default="1,32")
    args = p.parse_args()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=args.layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    base = Qwen2ForCausalLM(config).eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets)).eval()
    modules = args.layers * len(targets)
    print(f"qwen0_5b layer shapes, {args.layers} layers, {modules} LoRA modules r{args.rank}, {torch.get_num_threads()} threads")
    for batch in (int(b) for b in args.batches.split(",")):
        tb, nb = decode_step(base, batch)
        tl, nl = decode_step(lora, batch)
        print(
            f"batch {batch}: decode step base {tb * 1e3:.1f} ms ({nb} ops), unmerged {tl * 1e3:.1f} ms ({nl} ops): "
            f"{tb / tl:.2f}x; per LoRA module +{(tl - tb) / modules * 1e6:.0f} us, +{(nl - nb) / modules:.1f} ops"
        )


if __name__ == "__main__":
    main()
