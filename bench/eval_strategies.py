"""Per-adapter set-up overhead and generation throughput of each eval strategy,
as ratios to the bare base, all measured in one run on the same prompts.

    .venv/bin/python bench/eval_strategies.py [--sweep DIR] [--adapters N] [--batch 32] [--new-tokens 16]

Without ``--sweep`` it first trains N adapters of one base (``lora.rank=8,16,...``,
one epoch, tiny default) with the real CLI. For each strategy and adapter:

- set-up: what the strategy does before it can generate with that adapter
  (merge: PEFT merge_and_unload + save + reload from disk; merge_in_memory: load
  the adapter onto the resident base + merge into its weights, plus restoring the
  previous adapter's weights; direct: load the adapter + select it). Median over adapters.
- throughput: generated tokens per second for ``--batch`` prompts with the last
  adapter, every sequence forced to ``--new-tokens`` tokens (min_new_tokens) so all
  paths do equal work; median over ``--rounds`` rounds that run every strategy
  and the bare base in turn, so machine noise falls on all of them alike.
- temporary disk bytes.

``vllm`` runs only where vLLM is importable (a CUDA machine), with vLLM's own
LoRA engine; on CPU it is reported as not run. Results also go to
bench/results/eval_strategies.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "eval_strategies.json"
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
RANKS = [8, 16, 32, 64]


def train_sweep(n: int, where: Path) -> Path:
    """N adapters of the tiny base: ranks 8..64, or N seeds at rank 8 beyond four."""
    sweep = where / "sweep"
    axis = f"lora.rank={','.join(map(str, RANKS[:n]))}" if n <= len(RANKS) else f"trainer.seed={','.join(map(str, range(n)))}"
    cmd = [
        sys.executable,
        "-m",
        "kit",
        "train",
        "-m",
        axis,
        "trainer.epochs=1",
        "eval=none",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    ]
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)
    return sweep


def sweep_adapters(sweep: Path) -> tuple[Path, list[Path]]:
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    adapters = [Path(s["checkpoint"]["path"]) for s in summaries if s["checkpoint"]["kind"] == "adapter"]
    return Path(summaries[0]["base_model"]), adapters


def prompts(tokenizer, batch: int, device: str):
    import random

    numbers = random.Random(0).sample(range(10_000, 100_000), batch)
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Is {n} even or odd?"}], tokenize=False, add_generation_prompt=True
        )
        for n in numbers
    ]
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def generate_tok_s(model, inputs, new_tokens: int) -> float:
    import torch

    if inputs["input_ids"].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if out.is_cuda:
        torch.cuda.synchronize()
    return (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0] / (time.perf_counter() - start)


def setup_merge(base: Path, adapters: list[Path], device: str, dtype: str) -> tuple[dict, object]:
    """merge: merge_and_unload + save + reload, per adapter; keeps the last merged model."""
    import shutil

    from kit.core.model.loader import load_model
    from kit.lora.merge import merge_to_folder
    from kit.train.export import folder_bytes

    setups, temp, model = [], 0, None
    for adapter in adapters:
        tmp = Path(tempfile.mkdtemp(prefix="kit-bench-merged-"))
        try:
            start = time.perf_counter()
            merge_to_folder(base, adapter, tmp)
            model = load_model(tmp, dtype=dtype, device=device)
            setups.append(time.perf_counter() - start)
            temp = max(temp, folder_bytes(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"setup_s": statistics.median(setups), "temp_bytes": temp}, model


def setup_resident(resident, adapters: list[Path], merged: bool, device: str) -> dict:
    """merge_in_memory / direct: attach + activate each adapter (restoring the previous merge)."""
    setups = []
    for adapter in adapters:
        start = time.perf_counter()
        with resident.lock:
            resident.activate(resident.attach(adapter), merged=merged, check=False)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        setups.append(time.perf_counter() - start)
    start = time.perf_counter()
    with resident.lock:
        resident.restore(check=True)  # one restore with the fingerprint check, timed
    return {
        "setup_s": statistics.median(setups),
        "temp_bytes": 0,
        "restore_with_check_s": time.perf_counter() - start if merged else None,
    }


def interleaved_tok_s(runners: dict, inputs, new_tokens: int, rounds: int) -> dict:
    """Median tok/s per runner over rounds that take every runner in turn, so machine
    noise falls on all of them alike. A runner is (prepare, model)."""
    speeds = {name: [] for name in runners}
    for r in range(rounds + 1):
        for name, (prepare, model) in runners.items():
            prepare()
            tok_s = generate_tok_s(model, inputs, new_tokens)
            if r:  # round 0 is warm-up
                speeds[name].append(tok_s)
    return {name: statistics.median(v) for name, v in speeds.items()}


def bench_vllm(base: Path, adapters: list[Path], batch: int, new_tokens: int) -> dict:
    """vLLM's own engine with LoRA (only where vLLM is installed: a CUDA machine)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm not installed here"}
    from vllm import LLM, SamplingParams  # type: ignore
    from vllm.lora.request import LoRARequest  # type: ignore

    ranks = [json.loads((a / "adapter_config.json").read_text())["r"] for a in adapters]
    llm = LLM(str(base), enable_lora=True, max_lora_rank=max(8, max(ranks)), max_loras=1, seed=0)
    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, temperature=0)
    texts = [f"Is {n} even or odd?" for n in range(10_000, 10_000 + batch)]
    messages = [[{"role": "user", "content": t}] for t in texts]

    def run(lora=None) -> float:
        start = time.perf_counter()
        outs = llm.chat(messages, params, lora_request=lora, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start)

    run()
    base_tok_s = statistics.median(run() for _ in range(3))
    setups, speeds = [], []
    for i, adapter in enumerate(adapters, 1):
        lora = LoRARequest(f"a{i}", i, str(adapter))
        start = time.perf_counter()
        llm.chat(messages[:1], SamplingParams(max_tokens=1), lora_request=lora, use_tqdm=False)
        setups.append(time.perf_counter() - start)
        speeds.append(statistics.median(run(lora) for _ in range(3)))
    return {
        "setup_s": statistics.median(setups),
        "tok_s": statistics.median(speeds),
        "temp_bytes": 0,
        "base_tok_s_vllm": base_tok_s,
        "ratio_to_vllm_base": statistics.median(speeds) / base_tok_s,
    }


def measure(base: Path, adapters: list[Path], args, device: str, dtype: str) -> dict:
    from kit.core.model.loader import load_model
    from kit.lora.resident import ResidentBase

    bare = load_model(base, dtype=dtype, device=device)
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    resident = ResidentBase(base, device, short, max_adapters=1)  # one at a time: every attach is a real load
    resident.attach(adapters[-1])  # wrap the base once, outside the timings (first-use cost)
    rows = {"base": {"setup_s": None, "temp_bytes": 0}}
    rows["merge"], merged_model = setup_merge(base, adapters, device, dtype)
    rows["merge_in_memory"] = setup_resident(resident, adapters, True, device)
    rows["direct"] = setup_resident(resident, adapters, False, device)
    last = resident.attach(adapters[-1])

    def activate(merged: bool):
        return lambda: resident.activate(last, merged=merged, check=False)

    runners = {
        "base": (lambda: None, bare),
        "merge": (lambda: None, merged_model),
        "merge_in_memory": (activate(True), resident.forward_model(last)),
        "direct": (activate(False), resident.forward_model(last)),
    }
    inputs = prompts(resident.tokenizer, args.batch, device)
    with resident.lock:
        for name, tok_s in interleaved_tok_s(runners, inputs, args.new_tokens, args.rounds).items():
            rows[name]["tok_s"] = tok_s
        resident.restore()
    rows["vllm"] = bench_vllm(base, adapters, args.batch, args.new_tokens)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", type=Path, help="an existing sweep dir of adapter jobs (default: train one)")
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.sweep or train_sweep(args.adapters, Path(tmp))
        base, adapters = sweep_adapters(sweep)
        adapters = adapters[: args.adapters]
        rows = measure(base, adapters, args, device, dtype)
    report(rows, base, adapters, device, dtype, args)


def report(rows: dict, base: Path, adapters: list[Path], device: str, dtype: str, args) -> None:
    base_speed = rows["base"]["tok_s"]
    print(f"base {base} on {device} ({dtype}), {len(adapters)} adapters, batch {args.batch}, {args.new_tokens} new tokens")
    print("| strategy | set-up s / adapter | tok/s | throughput vs base | temp disk bytes |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if "skipped" in r:
            print(f"| {name} | not run: {r['skipped']} | | | |")
            continue
        r["ratio_to_base"] = r["tok_s"] / base_speed
        setup = "-" if r["setup_s"] is None else f"{r['setup_s']:.4f}"
        print(f"| {name} | {setup} | {r['tok_s']:.1f} | {r['ratio_to_base']:.3f} | {r['temp_bytes']:,} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "device": device,
                "dtype": dtype,
                "batch": args.batch,
                "new_tokens": args.new_tokens,
                "adapters": [str(a) for a in adapters],
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
