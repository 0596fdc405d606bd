"""``python -m kit eval --server URL [--model auto|base|<modifier>] [tasks.specs=[...]] [tasks.limit=N] [eval.*=...]``

Scores a running ``kit serve`` (or any OpenAI-compatible server) with Inspect's own
``openai-api`` provider: the model is ``openai-api/kit/<model>``, the key comes from
``$KIT_API_KEY`` (the variable the provider and the server both read). Scores are
printed, and written with the Inspect logs to ``--log-dir`` (default
``outputs/server_eval/<time>``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from kit.core.config import compose, one_line
from kit.core.errors import KitError
from kit.eval.inspect_runner import load_task_specs, run_inspect


def parse(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m kit eval --server", add_help=False)
    p.add_argument("--server", required=True)
    p.add_argument("--model", default="auto")
    p.add_argument("--log-dir", default=None)
    known, rest = p.parse_known_args(args)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        raise KitError(f"unexpected argument(s) {bad}; expected --server URL [--model NAME] [--log-dir DIR] [key=value ...]")
    return known, rest


def base_url(server: str) -> str:
    url = server.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise KitError(f"--server {server!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8000")
    return url if url.endswith("/v1") else url + "/v1"


def main(args: list[str]) -> int:
    from inspect_ai.model import GenerateConfig, get_model
    from omegaconf import OmegaConf

    known, overrides = parse(args)
    try:
        cfg = compose("train", overrides)
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise KitError(one_line(e)) from None
    specs = list(cfg.tasks.specs)
    load_task_specs(specs)
    log_dir = Path(known.log_dir or f"outputs/server_eval/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    model = get_model(
        f"openai-api/kit/{known.model}",
        memoize=False,
        base_url=base_url(known.server),
        api_key=os.environ.get("KIT_API_KEY") or "none",
        config=GenerateConfig(max_connections=int(cfg.eval.batch_size)),
    )
    # the process exits after: no close needed
    result = run_inspect(model, specs, log_dir, cfg.eval, cfg.tasks.limit, server=True)
    record = {"server": known.server, "model": known.model, "tasks": specs, "limit": cfg.tasks.limit, **result}
    (log_dir / "scores.json").write_text(json.dumps(record, indent=2))
    for task, metrics in result["scores"].items():
        print(f"{known.model}\t{task}\t" + " ".join(f"{m}={v:.3f}" for m, v in metrics.items()))
    print(f"kit: Inspect logs and scores.json in {log_dir}")
    return 0
