"""``eval=vllm``: Inspect's vLLM provider with native LoRA, ``vllm/<base>:<adapter>``.

kit starts one ``vllm serve`` per base (with ``--enable-lora``, ``--max-lora-rank``
rounded up from the largest adapter rank of the eval, and the server options of
``eval.vllm``), bound to 127.0.0.1, and points Inspect at it; Inspect loads each
adapter through ``/v1/load_lora_adapter`` and routes requests by adapter name.
Every adapter of a sweep is served by the same server (kept in the command's
``EvalSession``, stopped when it closes); a later adapter with a larger rank
restarts it with the larger limit.

``eval.vllm.server=standin`` runs ``kit.eval.vllm_standin`` instead: the same command
line and HTTP endpoints, computed with PEFT on the CPU. It exists because vLLM
needs a GPU build; it tests what kit sends and parses, not vLLM itself.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kit.core.device import dtype_info, resolve_device, resolve_dtype
from kit.core.errors import KitError
from kit.core.model.families import family_of
from kit.eval.context import EvalContext
from kit.eval.inspect_runner import max_connections, run_inspect
from kit.eval.session import EvalSession, session_scope
from kit.eval.strategy import Strategy
from kit.eval.vllm_lora import refusal, served_rank, unservable_from_config, unservable_modules
from kit.lora.resident import read_adapter

STANDIN = "vllm-standin"  # how results name a run on kit's stand-in (eval.vllm.server=standin): not vLLM
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values `vllm serve --max-lora-rank` accepts


@dataclass
class Server:
    served: str
    max_lora_rank: int | None
    url: str
    api_key: str
    process: subprocess.Popen
    command: list[str]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def lora_rank(adapter: Path) -> int | None:
    """The adapter's largest rank (``r`` or a ``rank_pattern`` rank: Phi's fused projections), or None
    when its config is unreadable (that adapter fails on its own turn)."""
    try:
        return served_rank(json.loads((adapter / "adapter_config.json").read_text()))
    except (OSError, ValueError, KeyError):
        return None


def server_rank(ranks: list[int], configured: int | None) -> int:
    need = max(ranks + [configured or 0])
    for allowed in VLLM_LORA_RANKS:
        if allowed >= need:
            return allowed
    raise KitError(f"LoRA rank {need} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def server_command(cfg, served: str, port: int, max_lora_rank: int | None, dtype: str) -> list[str]:
    """``vllm serve`` and its flags; the API key goes through the environment ($VLLM_API_KEY), never argv
    (readable by every user in /proc/<pid>/cmdline on a shared node)."""
    v = cfg.vllm
    program = ["vllm"] if real_vllm(cfg) else [sys.executable, "-m", "kit.eval.vllm_standin"]
    cmd = [
        *program,
        "serve",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype_info(dtype).torch_name,
        "--seed",
        str(cfg.seed),
        "--gpu-memory-utilization",
        str(v.gpu_memory_utilization),
        "--tensor-parallel-size",
        str(v.tensor_parallel_size),
    ]
    if max_lora_rank:
        cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(v.max_loras)]
    if v.max_model_len:
        cmd += ["--max-model-len", str(v.max_model_len)]
    return cmd + [str(a) for a in v.extra_args]


def refusal_for(cfg, base: Path) -> str | None:
    """eval=vllm (the real server): why vLLM will not serve the adapter this job trains, known before
    training (kit's default trains the output projection); None when it will. ``eval=auto`` needs no
    refusal: it does not pick vLLM for such an adapter and records why."""
    if not real_vllm(cfg.eval):
        return None
    if str(getattr(cfg.checkpointer.kind, "value", cfg.checkpointer.kind)) == "full" or cfg.phase.get("merge"):
        return None  # a merged model: vLLM serves it without LoRA
    bad = unservable_from_config(cfg.lora)
    return refusal(bad[0], family_of(base).name) if bad else None


def real_vllm(cfg) -> bool:
    """eval.vllm.server: the real `vllm serve`, or kit's CPU stand-in."""
    return str(getattr(cfg.vllm.server, "value", cfg.vllm.server)) == "vllm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cfg, served: str, max_lora_rank: int | None, log_dir: Path) -> Server:

    if real_vllm(cfg):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise KitError("eval=vllm needs vLLM (pip install vllm, on a CUDA machine); it is not installed here")
    port, api_key = free_port(), secrets.token_hex(16)
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device))
    cmd = server_command(cfg, served, port, max_lora_rank, dtype)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"vllm-server-{port}.log"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_API_KEY": api_key}
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(served, max_lora_rank, f"http://127.0.0.1:{port}", api_key, process, cmd, log)
    wait_healthy(server, int(cfg.vllm.startup_timeout))
    return server


def wait_healthy(server: Server, timeout: int) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise KitError(f"vLLM server exited with status {server.process.returncode} ({tail[0]}); log: {server.log}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise KitError(f"vLLM server not healthy after {timeout} s (eval.vllm.startup_timeout); log: {server.log}")


def server_for(session: EvalSession, ctx: EvalContext, served: str, adapters: list[Path]) -> Server:
    """The session's server for this base, (re)started when it cannot take these adapters."""
    cfg = ctx.eval_cfg
    ranks = [r for r in map(lora_rank, adapters) if r is not None]
    rank = server_rank(ranks, cfg.vllm.max_lora_rank) if adapters else None
    server = session.servers.get(served)
    if server and server.process.poll() is None and (rank or 0) <= (server.max_lora_rank or 0):
        return server
    if server:
        session.servers.pop(served)
        server.stop()
    session.servers[served] = start(cfg, served, rank, ctx.log_dir)
    return session.servers[served]


def evaluate(ctx: EvalContext) -> dict:
    with session_scope() as session:
        return evaluate_in(session, ctx)


def evaluate_in(session: EvalSession, ctx: EvalContext) -> dict:
    from inspect_ai.model import GenerateConfig, get_model

    full = ctx.checkpoint_kind == "full"
    if not full:
        config, _ = read_adapter(ctx.checkpoint_path)  # a broken folder fails here in one line, not inside Inspect
        bad = unservable_modules(config.get("target_modules"))
        if bad and real_vllm(ctx.eval_cfg):  # vLLM would refuse it at load; the stand-in computes with PEFT
            raise KitError(refusal(bad[0]))
    served = str(ctx.checkpoint_path if full else ctx.base)
    adapters = [] if full else list(dict.fromkeys([*ctx.peers, ctx.checkpoint_path]))
    start_s = time.perf_counter()
    server = server_for(session, ctx, served, adapters)
    name = f"vllm/{served}" if full else f"vllm/{served}:{ctx.checkpoint_path}"
    model = get_model(
        name,
        memoize=False,
        base_url=f"{server.url}/v1",
        api_key=server.api_key,
        config=GenerateConfig(max_connections=max_connections(ctx.eval_cfg)),
    )
    setup = time.perf_counter() - start_s
    change = None if full else probe_adapter(server, served, ctx.checkpoint_path)
    try:
        result = run_inspect(model, ctx.tasks, ctx.log_dir, ctx.eval_cfg, ctx.limit, server=True)
    finally:
        model.api.close()  # Inspect forgets the server (kit owns it); the next model re-resolves
    return {
        **result,
        "temp_peak_bytes": 0,
        "setup_seconds": setup,
        "server": {"command": server.command, "max_lora_rank": server.max_lora_rank, "log": str(server.log)},
        "adapter_logit_change": change,
    }


PROBES = ("Is 12 even or odd?", "Hello, who are you?", "Reverse the word kit.")
TOP_LOGPROBS = 5


def probe_adapter(server: Server, served: str, adapter: Path) -> dict:
    """The largest change the adapter makes to the server's next-token log-probabilities on a few probes
    (its top ``TOP_LOGPROBS`` at the first step, base vs adapter); a KitError when it changes nothing,
    so an adapter the server ignores (not applied, a zero ``lora_B``) never scores as itself.

    The adapter is registered under the name Inspect's provider uses (its path), so Inspect finds it
    loaded and does not load it again."""
    import httpx

    headers = {"Authorization": f"Bearer {server.api_key}"}
    load = httpx.post(
        f"{server.url}/v1/load_lora_adapter",
        json={"lora_name": str(adapter), "lora_path": str(adapter)},
        headers=headers,
        timeout=600,
    )
    if load.status_code != 200 and "already been loaded" not in load.text:
        raise KitError(f"the vLLM server refused adapter {str(adapter)!r}: {load.text.strip()[:300]}")
    moved, reordered = 0.0, 0
    for prompt in PROBES:
        base, mine = (top_logprobs(server, model, prompt, headers) for model in (served, str(adapter)))
        moved = max([moved, *(abs(base[tok] - mine[tok]) for tok in set(base) & set(mine))])
        reordered += set(base) != set(mine)
    if moved == 0.0 and not reordered:
        raise KitError(
            f"adapter {str(adapter)!r} changes nothing on the vllm path (its top-{TOP_LOGPROBS} next-token "
            f"log-probabilities equal the base's on {len(PROBES)} probes): its score would be the base's; "
            "expected a trained adapter the server applies"
        )
    return {"max_abs_logprob_diff": moved, "probes_with_other_top_tokens": reordered, "probes": len(PROBES)}


def top_logprobs(server: Server, model: str, prompt: str, headers: dict) -> dict[str, float]:
    import httpx

    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
    r = httpx.post(f"{server.url}/v1/completions", json=body, headers=headers, timeout=600)
    if r.status_code != 200:
        raise KitError(f"the vLLM server did not answer a logprobs probe for {model!r} ({r.status_code}: {r.text[:200]})")
    return r.json()["choices"][0]["logprobs"]["top_logprobs"][0]


STRATEGY = Strategy(
    "vllm",
    evaluate,
    "vLLM server with native LoRA (vllm.server=standin: CPU stand-in, tests only)",
    needs=("inspect_ai", "vllm"),
    needs_cuda=True,
    refuse=refusal_for,
)
