"""``kit serve`` throughput and latency, as ratios to base-only requests, measured in one run.

    .venv/bin/python bench/serve.py [--registry DIR] [--requests 48] [--concurrency 8] [--new-tokens 16]

Without ``--registry`` it first trains the bundled three modifiers (``+experiment=modifiers``,
one epoch, no eval) with the real CLI. Then, against real ``kit serve`` subprocesses on
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--registry", type=Path)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="serve.device of the servers (cuda on a GPU machine)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry = args.registry or train_modifiers(Path(tmp))
        modifiers = [m["name"] for m in json.loads((registry / "modifiers.json").read_text())["modifiers"]]
        scenarios = ["base", "one", "mixed", "auto"]
        servers = {b: start_server(registry, f"serve.batching={b}", device=args.device) for b in ("mixed", "switch")}
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
        report = {"settings": vars(args) | {"registry": str(registry)}, "servers": {}}
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
    print(
        f"switch: set_adapter {report['switch']['set_adapter_s'] * 1e6:.0f} us, "
        f"attach from disk {report['switch']['attach_from_disk_s'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
