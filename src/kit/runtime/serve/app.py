"""What the server answers: models, completions, routing. HTTP lives in ``kit/runtime/serve/http.py``.

A request names ``base``, a modifier from the registry, or ``auto`` (the router
picks one, or the base). The response says which modifier answered
(``modifier``; ``route`` for ``auto``: router, score, seconds).

Every prompt is checked against the model's context before it is queued: a
prompt longer than the context gets 400 naming the limit (found from its length
in characters alone when it is far too long, so a huge prompt is never tokenized),
and ``max_tokens`` is cut to what the context has room for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.openai_api import ApiError, completion_response, model_entry
from kit.runtime.router import make_router
from kit.runtime.serve import schemas
from kit.runtime.serve.engine import Engine, Job
from kit.runtime.serve.store import ModifierStore

BASE, AUTO = "base", "auto"
MAX_NAME = 64  # characters of an unknown model name echoed back in a 404


@dataclass
class Prepared:
    """A validated request, ready for the engine."""

    model: str
    chat: bool
    prompt_ids: list[int]
    modifier: str | None
    route: dict | None
    settings: dict
    stream: bool
    include_usage: bool

    def extra(self) -> dict:
        extra = {"modifier": self.modifier or BASE}
        if self.route:
            extra["route"] = self.route
        return extra


class ServeApp:
    def __init__(self, serve_cfg, router_cfg, registry, base: Path):

        device = resolve_device(serve_cfg.device)
        self.cfg = serve_cfg
        self.registry = registry
        self.base = base
        self.router = make_router(router_cfg, registry)
        self.store = ModifierStore(
            registry, base, device, resolve_dtype(serve_cfg.dtype, device), bool(serve_cfg.preload), int(serve_cfg.max_loaded)
        )
        self.engine = Engine(
            self.store,
            str(getattr(serve_cfg.batching, "value", serve_cfg.batching)),
            int(serve_cfg.batch_wait_ms),
            int(serve_cfg.max_batch),
            int(serve_cfg.preempt_tokens),
        )
        self.tokenizer = self.store.resident.tokenizer
        self.encode_content = content_encoder(self.tokenizer)
        self.context = context_length(self.store.resident.model)
        # no token is longer than this many characters: a prompt over context * this is too long untokenized
        self.longest_token = max(len(t) for t in self.tokenizer.get_vocab())
        self.timeout = float(serve_cfg.request_timeout_s)

    def names(self) -> list[str]:
        return [AUTO, BASE, *self.registry.names()]

    def models(self) -> dict:
        loaded = set(self.store.loaded())
        data = [
            model_entry(AUTO, "kit", router=self.router.kind, max_model_len=self.context),
            model_entry(BASE, "kit", root=BASE, max_model_len=self.context),
        ]
        for m in self.registry.modifiers:
            data.append(
                model_entry(
                    m.name,
                    "kit",
                    root=m.name,  # a name, not a path: clients learn nothing of the server's disk
                    parent=BASE,
                    rank=m.rank,
                    bytes=m.record.get("bytes"),
                    loaded=m.name in loaded,
                    max_model_len=self.context,
                )
            )
        return {"object": "list", "data": data}

    def check_model(self, model: str) -> None:
        if model not in self.names():
            shown = model if len(model) <= MAX_NAME else model[:MAX_NAME] + f"... ({len(model)} chars)"
            raise ApiError(404, f"model {shown!r} unknown; expected one of {self.names()}", "model_not_found")

    def resolve(self, model: str, text: str) -> tuple[str | None, dict | None]:
        """(modifier or None for the base, routing info for ``auto``)."""
        if model == BASE:
            return None, None
        if model == AUTO:
            start = time.perf_counter()
            chosen, score = self.router.route(text)
            return chosen, {"router": self.router.kind, "score": score, "seconds": time.perf_counter() - start}
        return model, None

    def prepare(self, request, chat: bool) -> Prepared:
        """Everything checked before the request is queued; ApiError 400/404 otherwise."""
        self.check_model(request.model)
        texts = request.texts()
        if chat:
            # bounded before any work: every message renders to at least one token, so more messages
            # than the context holds cannot fit (30k empty messages cost 1.4 s of template rendering)
            if len(texts) >= self.context:
                raise ApiError(
                    400, f"{len(texts)} messages; this model's context is {self.context} tokens (expected fewer messages)"
                )
            self.check_length(sum(len(t) for t in texts) + sum(len(m.role) for m in request.messages))
            ids = chat_ids(self.tokenizer, self.encode_content, [(m.role, t) for m, t in zip(request.messages, texts)])
            text = " ".join(t for m, t in zip(request.messages, texts) if m.role == "user")
        else:
            text = texts[0]
            self.check_length(len(text))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization; expected some text")
        if len(ids) >= self.context:
            raise ApiError(
                400,
                f"the prompt is {len(ids)} tokens; this model's context is {self.context} tokens "
                f"(at most {self.context - 1} prompt tokens, to leave room for an answer)",
            )
        modifier, route = self.resolve(request.model, text)
        settings = self.sampling(request, room=self.context - len(ids))
        options = request.stream_options
        return Prepared(
            request.model, chat, ids, modifier, route, settings, bool(request.stream), bool(options and options.include_usage)
        )

    def check_length(self, chars: int) -> None:
        if chars > self.context * self.longest_token:
            raise ApiError(
                400,
                f"the prompt is {chars} characters, at least {chars // self.longest_token} tokens; "
                f"this model's context is {self.context} tokens",
            )

    def sampling(self, request, room: int) -> dict:
        """Generation settings: greedy when temperature is 0 (the default); max_tokens cut to the context's room."""
        limit = int(self.cfg.max_tokens_limit)
        asked = request.max_tokens if request.max_tokens is not None else request.max_completion_tokens
        if asked is not None and asked > limit:
            raise ApiError(400, f"'max_tokens' is {asked}; expected 1 to {limit} (serve.max_tokens_limit)")
        max_tokens = min(asked or int(self.cfg.max_tokens), room)
        if request.min_tokens > max_tokens:
            raise ApiError(400, f"'min_tokens' is {request.min_tokens}; expected 0 to max_tokens ({max_tokens})")
        return {
            "max_new_tokens": max_tokens,
            "min_new_tokens": request.min_tokens,
            "temperature": schemas.temperature_of(request),
            "top_p": request.top_p or 1.0,
            "seed": request.seed or 0,
            "stop": request.stop or [],
        }

    def job(self, p: Prepared, **callbacks) -> Job:
        return Job(p.prompt_ids, p.modifier, p.settings, self.timeout, **callbacks)

    def response(self, p: Prepared, result: tuple) -> dict:
        return completion_response(p.model, *result, p.chat, **p.extra())

    def complete(self, body: dict, chat: bool) -> tuple[dict, dict]:
        """Blocking, in process: (response, extra headers) for a request body."""
        p = self.prepare(schemas.parse(json.dumps(body).encode(), chat), chat)
        job = self.engine.submit(self.job(p))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return self.response(p, job.result), {"X-Kit-Modifier": p.modifier or BASE}


PLACEHOLDER = "\ue000kit{}\ue001"  # private-use characters: no chat template writes them itself


def content_encoder(tokenizer) -> Callable[[str], list[int]]:
    """Token ids of message content with special-token text taken as text (``<|im_end|>`` typed by a
    user is not the end of a turn): a copy of the fast tokenizer's backend with
    ``encode_special_tokens`` set once. Not transformers' ``split_special_tokens=True``: that flips
    the one shared backend per call, and requests tokenized in parallel then race ("Already borrowed",
    or one request's setting applied to another's prompt).

    ``encode_batch`` of one text, not ``encode``: ``encode`` holds the GIL for the whole call (0.2 s
    for a 400,000-character message), and the engine thread, which gives up the GIL at every torch op,
    then waits out a whole tokenization per op; ``encode_batch`` releases it while it works."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    return lambda text: backend.encode_batch([text], add_special_tokens=False)[0].ids


def chat_ids(tokenizer, encode_content: Callable[[str], list[int]], messages: list[tuple[str, str]]) -> list[int]:
    """The chat template's token ids with each message's content tokenized as plain text.

    The template is rendered around placeholders; its own text (role headers, turn markers) is
    tokenized with special tokens recognized, the users' content by ``encode_content``
    (``content_encoder``), so no user can forge an assistant turn. For content without
    special-token text the ids equal tokenizing the whole rendered prompt (tested)."""
    rendered = tokenizer.apply_chat_template(
        [{"role": r, "content": PLACEHOLDER.format(i)} for i, (r, _) in enumerate(messages)],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids: list[int] = []
    for i, (_, content) in enumerate(messages):
        head, marker, rendered = rendered.partition(PLACEHOLDER.format(i))
        if not marker:  # a template that drops or rewrites a message: fall back to refusing forgery outright
            raise ApiError(400, "this model's chat template does not show every message; expected plain messages")
        ids += tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
        ids += encode_content(content) if content else []
    return ids + (tokenizer(rendered, add_special_tokens=False)["input_ids"] if rendered else [])


def context_length(model) -> int:
    """Tokens the model can attend to: its config's ``max_position_embeddings`` (or the like)."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
