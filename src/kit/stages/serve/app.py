"""What the server answers: models, completions, routing. HTTP lives in ``kit/serve/http.py``.

A request names ``base``, a modifier from the registry, or ``auto`` (the router
picks one, or the base). The response says which modifier answered
(``modifier``; ``route`` for ``auto``: router, score, seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.stages.router import make_router
from kit.stages.serve.engine import Engine
from kit.stages.serve.openai_api import (
    ApiError,
    chat_prompt,
    completion_prompt,
    completion_response,
    model_entry,
    sampling,
)
from kit.stages.serve.store import ModifierStore

BASE, AUTO = "base", "auto"


class ServeApp:
    def __init__(self, serve_cfg, router_cfg, registry, base: Path):

        device = resolve_device(serve_cfg.device)
        self.cfg = serve_cfg
        self.registry = registry
        self.base = base
        self.router = make_router(router_cfg, registry)
        self.store = ModifierStore(registry, base, device, resolve_dtype(serve_cfg.dtype, device),
                                   bool(serve_cfg.preload), int(serve_cfg.max_loaded))
        self.engine = Engine(self.store, str(getattr(serve_cfg.batching, "value", serve_cfg.batching)),
                             int(serve_cfg.batch_wait_ms), int(serve_cfg.max_batch))

    def names(self) -> list[str]:
        return [AUTO, BASE, *self.registry.names()]

    def models(self) -> dict:
        loaded = set(self.store.loaded())
        data = [model_entry(AUTO, "kit", router=self.router.kind), model_entry(BASE, "kit", root=str(self.base))]
        for m in self.registry.modifiers:
            data.append(model_entry(m.name, "kit", root=str(m.path), parent=BASE, rank=m.rank,
                                    bytes=m.record.get("bytes"), loaded=m.name in loaded))
        return {"object": "list", "data": data}

    def check_model(self, model) -> None:
        if not isinstance(model, str):
            raise ApiError(400, f"'model' must be a string naming one of {self.names()}")
        if model not in self.names():
            raise ApiError(404, f"model {model!r} unknown; expected one of {self.names()}", "model_not_found")

    def resolve(self, model: str, text: str) -> tuple[str | None, dict | None]:
        """(modifier or None for the base, routing info for ``auto``)."""
        if model == BASE:
            return None, None
        if model == AUTO:
            start = time.perf_counter()
            chosen, score = self.router.route(text)
            return chosen, {"router": self.router.kind, "score": score, "seconds": time.perf_counter() - start}
        return model, None

    def complete(self, body: dict, chat: bool) -> tuple[dict, dict]:
        """(response, extra headers) for /v1/chat/completions or /v1/completions."""
        if body.get("stream"):
            raise ApiError(400, "'stream' is not supported by kit serve; expected stream=false")
        if body.get("n", 1) != 1:
            raise ApiError(400, f"'n' is {body.get('n')!r}; kit serve returns one choice (n=1)")
        self.check_model(body.get("model"))
        tok = self.store.resident.tokenizer
        if chat:
            messages = body.get("messages")
            prompt = chat_prompt(tok, messages)
            text = " ".join(str(m.get("content")) for m in messages if m.get("role") == "user")
        else:
            prompt = text = completion_prompt(body)
        modifier, route = self.resolve(body.get("model"), text)
        settings = sampling(body, int(self.cfg.max_tokens), int(self.cfg.max_tokens_limit))
        output, n_in, n_out, finish = self.engine.generate(prompt, modifier, settings)
        extra = {"modifier": modifier or BASE}
        if route:
            extra["route"] = route
        response = completion_response(body["model"], output, n_in, n_out, finish, chat, **extra)
        return response, {"X-Kit-Modifier": modifier or BASE}
