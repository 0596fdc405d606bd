"""What one misbehaving client costs the others on ``kit serve``: p50/p95 latency of well-behaved clients.

    .venv/bin/python bench/serve_load.py [--registry DIR | --base smollm2|FOLDER] [--clients 32] [--requests 2]

Without ``--registry`` it first makes the modifiers as ``bench/serve.py`` does (``--base``: synthetic
modifiers on that base; else the bundled three trained on the tiny model).
Against one real ``kit serve`` subprocess on 127.0.0.1 (defaults, mixed batching), in one run:

- ``idle``: one well-behaved client alone, sequential requests (the idle-server latency);
- ``load``: ``--clients`` well-behaved clients at once, each sending ``--requests`` chat requests
  (cycling base / parity / last_digit / reverse, 8 new tokens forced with ``min_tokens``);
- ``load+misbehaving``: the same clients while, all the time, misbehaving clients run beside them:
  a slow client (trickles its request one byte every 0.2 s), a huge prompt (a 400,000-character
  message, resent as soon as it is answered), a client that hangs up mid-generation
  (200 forced tokens, gone after 0.3 s), and 60 connections that open and stall;
- ``load+huge``, ``load+hang_up``, ``load+slow,stall``: the same, one kind of misbehaviour at a time;
- ``load+long``: the clients beside one in-limit long generation (200 forced tokens, resent): with
  continuous batching the long row keeps one place and the others come and go around it.

The misbehaving clients run in a process of their own, as real clients would (not sharing the
measuring process's GIL).

A well-behaved request gets ``--request-timeout`` seconds (120): a slower one is counted in its
scenario's errors as ``timeout``, so the run ends in bounded time even if the server stops answering;
a progress line per scenario (elapsed, answered, p95, errors, the server's /health counters) goes to
stderr as it ends. The run is 6 scenarios of ``--clients`` x ``--requests`` plus the idle ones: on
SmolLM2 on 2 shared CPU cores, 4-5 requests/s (8 tokens each), so the default 32 x 2 takes ~3 minutes
and 64 x 4 ~7 (bench/README.md).

Reported: p50/p95 per scenario, the ratio of ``load+misbehaving`` p95 to ``load`` p95 (the goal:
<= 2x) and to ``idle`` p95, what the misbehaving clients got (status codes), errors, and the
machine's load average. Results also go to bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import ENV, PROMPTS, ROOT, make_registry, start_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_load.json"


def body(model: str, tokens: int = 8, text: str | None = None) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text or PROMPTS[model]}],
        "max_tokens": tokens,
        "min_tokens": tokens,
    }


def percentiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"n": len(xs), "p50_s": statistics.median(xs), "p95_s": pick(0.95), "max_s": xs[-1]}


REQUEST_TIMEOUT_S = 120.0  # a well-behaved request slower than this is counted as "timeout", not waited for


def well_behaved(url: str, clients: int, requests: int, timeout: float = REQUEST_TIMEOUT_S) -> dict:
    """``clients`` threads, ``requests`` each; latencies of the answered ones, and every other outcome
    (a status code, ``timeout`` past ``timeout`` seconds, or the transport error's name) in ``errors``."""
    import httpx

    models = list(PROMPTS)
    times, errors = [], []
    start_all = time.perf_counter()

    def one_client(c: int) -> None:
        with httpx.Client(timeout=timeout) as http:
            for r in range(requests):
                start = time.perf_counter()
                try:
                    resp = http.post(f"{url}/chat/completions", json=body(models[(c + r) % len(models)]))
                except httpx.TimeoutException:
                    errors.append("timeout")
                    continue
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                    continue
                if resp.status_code == 200:
                    times.append(time.perf_counter() - start)
                else:
                    errors.append(resp.status_code)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start_all
    return {**percentiles(times or [float("nan")]), "n": len(times), "wall_s": wall, "errors": errors}


class Misbehaving:
    """Misbehaving clients in background threads until ``stop``; what they got, by kind."""

    def __init__(self, url: str, kinds: list[str]):
        self.url, self.kinds = url, kinds
        self.host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        self.port = int(port)
        self.stop = threading.Event()
        self.got: dict[str, list] = {k: [] for k in kinds}
        self.threads = [threading.Thread(target=getattr(self, k), daemon=True) for k in kinds]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        deadline = time.monotonic() + 30  # all together: the parent waits for this process's report
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def slow(self) -> None:
        data = json.dumps(body("base")).encode()
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        while not self.stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=30) as s:
                    for byte in request:
                        if self.stop.is_set():
                            return
                        s.sendall(bytes([byte]))
                        time.sleep(0.2)
                    self.got["slow"].append(s.recv(12).decode(errors="replace"))
            except OSError as e:
                self.got["slow"].append(type(e).__name__)  # closed by the server's client timeout

    def huge(self) -> None:
        import httpx

        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            while not self.stop.is_set():
                try:
                    r = http.post(f"{self.url}/chat/completions", json=body("base", text="x" * 400_000))
                    self.got["huge"].append(r.status_code)
                except httpx.HTTPError as e:
                    self.got["huge"].append(type(e).__name__)

    def hang_up(self) -> None:
        import httpx

        while not self.stop.is_set():
            try:
                httpx.post(f"{self.url}/chat/completions", json=body("parity", 200), timeout=0.3)
                self.got["hang_up"].append("answered")
            except httpx.TimeoutException:
                self.got["hang_up"].append("left")

    def stall(self) -> None:
        while not self.stop.is_set():
            conns = [socket.create_connection((self.host, self.port), timeout=30) for _ in range(60)]
            self.stop.wait(6)
            self.got["stall"].append(sum(_closed(c) for c in conns))

    def long(self) -> None:
        import httpx

        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            while not self.stop.is_set():
                try:
                    self.got["long"].append(http.post(f"{self.url}/chat/completions", json=body("parity", 200)).status_code)
                except httpx.HTTPError as e:
                    self.got["long"].append(type(e).__name__)


def _closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.close()


def health(url: str) -> dict:
    """The server's counters (no key is set here, so /health shows them)."""
    import httpx

    try:
        h = httpx.get(f"{url.removesuffix('/v1')}/health", timeout=10).json()
    except httpx.HTTPError as e:
        return {"unreachable": type(e).__name__}
    return {k: h.get(k) for k in ("requests", "queued", "busy", "cancelled", "timed_out", "preempted")}


def summarize(got: dict) -> dict:
    return {k: {str(v): vs.count(v) for v in set(vs)} for k, vs in got.items()}


class Apart:
    """Misbehaving clients in a process of their own (as real clients are: no shared GIL with the
    measured ones); stopped by closing its stdin, it prints what they got as JSON."""

    def __init__(self, url: str, kinds: list[str]):
        self.cmd = [sys.executable, __file__, "--misbehave", ",".join(kinds), "--url", url]

    def __enter__(self):
        import subprocess

        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
        return self

    def __exit__(self, *exc):
        out, _ = self.proc.communicate("", timeout=120)
        self.got = json.loads(out.strip().splitlines()[-1])


def misbehave(url: str, kinds: list[str]) -> None:
    with Misbehaving(url, kinds) as bad:
        sys.stdin.read()  # until the parent closes it
    print(json.dumps(summarize(bad.got)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--registry", type=Path)
    p.add_argument("--base", help="smollm2 or an HF folder: three synthetic modifiers on it (no training)")
    p.add_argument("--clients", type=int, default=32)  # > serve.max_batch (16): queueing and preemption
    p.add_argument("--requests", type=int, default=2)
    p.add_argument("--idle-requests", type=int, default=20)
    p.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S, help="seconds; slower counts as 'timeout'")
    p.add_argument("--misbehave", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.misbehave:
        return misbehave(args.url, args.misbehave.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        registry = make_registry(args, Path(tmp))
        proc, url = start_server(registry, "serve.client_timeout_s=5")
        report = {"settings": vars(args) | {"registry": str(registry)}, "load_average_before": os.getloadavg()}
        began = time.perf_counter()

        def measure(name: str, clients: int, requests: int) -> None:
            report[name] = r = well_behaved(url, clients, requests, args.request_timeout)
            print(  # progress, on stderr: the table comes at the end
                f"[{time.perf_counter() - began:6.0f} s] {name}: {r['n']} answered in {r['wall_s']:.1f} s, "
                f"p95 {r['p95_s']:.2f} s, errors {len(r['errors'])}; server {health(url)}",
                file=sys.stderr,
                flush=True,
            )

        try:
            well_behaved(url, 4, 2, args.request_timeout)  # warm-up
            measure("idle", 1, args.idle_requests)
            measure("load", args.clients, args.requests)
            with Apart(url, ["slow", "huge", "hang_up", "stall"]) as bad:
                time.sleep(3)
                measure("load+misbehaving", args.clients, args.requests)
            report["misbehaving_got"] = bad.got
            for kind in ("huge", "hang_up", "slow,stall"):  # which one costs what
                with Apart(url, kind.split(",")):
                    time.sleep(3)
                    measure(f"load+{kind}", args.clients, args.requests)
            with Apart(url, ["long"]) as bad:
                time.sleep(3)
                measure("load+long", args.clients, args.requests)
            report["long_got"] = bad.got
        finally:
            proc.terminate()
            report["server_exit"] = proc.wait(timeout=120)
    report["load_average_after"] = os.getloadavg()
    report["misbehaving_p95_vs_load_p95"] = report["load+misbehaving"]["p95_s"] / report["load"]["p95_s"]
    report["misbehaving_p95_vs_idle_p95"] = report["load+misbehaving"]["p95_s"] / report["idle"]["p95_s"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    for name in ("idle", "load", "load+misbehaving", "load+huge", "load+hang_up", "load+slow,stall", "load+long"):
        r = report[name]
        print(
            f"{name:17s} n={r['n']:4d}  p50 {r['p50_s'] * 1000:8.1f} ms  p95 {r['p95_s'] * 1000:8.1f} ms  "
            f"max {r['max_s'] * 1000:8.1f} ms  errors {r['errors'][:5]}"
        )
    print(
        f"load+misbehaving p95 / load p95: {report['misbehaving_p95_vs_load_p95']:.2f}x (goal <= 2x); "
        f"/ idle p95: {report['misbehaving_p95_vs_idle_p95']:.2f}x"
    )
    print(f"misbehaving clients got: {report['misbehaving_got']}; long: {report['long_got']}")
    print(
        f"server exit {report['server_exit']}; load average before {report['load_average_before']}, "
        f"after {report['load_average_after']}"
    )


if __name__ == "__main__":
    main()
