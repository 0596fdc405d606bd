"""Pydantic models of the OpenAI request and response bodies ``kit serve`` speaks.

Requests are validated strictly (``n=true`` is not 1, ``max_tokens=8.5`` is not an
integer) straight from the raw bytes, so malformed JSON, lone surrogates and wrong
types all become one 400 naming the field. Fields kit does not implement are refused
with 400 naming the field when they ask for something (``tools=[...]``,
``logprobs=true``, ``response_format={"type": "json_object"}``) rather than being
silently ignored; unknown fields are allowed, as OpenAI clients send extras.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kit.core.openai_api import ApiError

# Below this a temperature is greedy decoding (vLLM's _SAMPLING_EPS): dividing logits by 1e-300 overflows.
GREEDY_BELOW = 1e-5
MAX_STOP = 4

# field -> the value that means "not asked for" (anything else gets 400 naming the field)
UNSUPPORTED = {
    "tools": [],
    "tool_choice": "none",
    "functions": [],
    "function_call": "none",
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "echo": False,
    "best_of": 1,
    "suffix": "",
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
}


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ContentPart(Strict):
    type: str
    text: str | None = None


class Message(Strict):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = [p for p in self.content if p.type != "text"]
        if parts:
            raise ApiError(400, f"message content part of type {parts[0].type!r} is not supported; expected text parts")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class ResponseFormat(Strict):
    type: str


class Common(Strict):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] = 0  # vLLM's extension: no end before this many
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None  # one choice per request
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"expected up to {MAX_STOP} non-empty strings")
        return stops

    def refuse_unsupported(self) -> None:
        for key, value in (self.model_extra or {}).items():
            if key in UNSUPPORTED and value not in (None, UNSUPPORTED[key]):
                raise ApiError(400, f"{key!r} is not supported by kit serve (got {short(value)}); leave it out")
        if self.response_format is not None and self.response_format.type != "text":
            raise ApiError(
                400,
                f"'response_format' type {self.response_format.type!r} is not supported by kit serve; "
                "expected 'text' or leave it out",
            )
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "'stream_options' is only allowed with stream=true")

    def texts(self) -> list[str]:
        return []


class ChatRequest(Common):
    messages: Annotated[list[Message], Field(min_length=1)]

    def texts(self) -> list[str]:
        return [m.text() for m in self.messages]


class CompletionRequest(Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @field_validator("prompt")
    @classmethod
    def _one(cls, prompt):
        prompt = prompt[0] if isinstance(prompt, list) else prompt
        if not prompt:
            raise ValueError("expected a non-empty string (an empty prompt leaves nothing to continue)")
        return prompt

    def texts(self) -> list[str]:
        return [self.prompt]


def short(value: Any, most: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most] + f"... ({len(text)} chars)"


def where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def parse(raw: bytes, chat: bool) -> ChatRequest | CompletionRequest:
    """The request from its raw body, or ApiError 400 naming the first bad field."""
    kind = ChatRequest if chat else CompletionRequest
    try:
        request = kind.model_validate_json(raw or b"{}")
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"].startswith("json"):
            raise ApiError(
                400,
                f"request body is not valid JSON ({err['msg']}); expected a JSON object "
                "(lone UTF-16 surrogates such as \\ud800 are not text)",
            ) from None
        if err["type"] == "model_type":
            raise ApiError(400, "request body must be a JSON object") from None
        field, got = where(err["loc"]), short(err.get("input"))
        raise ApiError(400, f"{field!r}: {err['msg'].rstrip('.')} (got {got})") from None
    request.refuse_unsupported()
    for text in request.texts():
        check_text(text)
    return request


def check_text(text: str) -> None:
    """Text the tokenizer can encode (json.loads lets lone surrogates through; jiter does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"text holds {text[e.start : e.end]!r} at {e.start}, which is not valid Unicode") from None


def temperature_of(request: Common) -> float:
    t = request.temperature or 0.0
    return 0.0 if t < GREEDY_BELOW else t


# -- responses ---------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    ).model_dump()


def new_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"


def chunk(
    rid: str, model: str, chat: bool, text: str | None, finish: str | None, first: bool = False, use: dict | None = None, **extra
) -> dict:
    """One server-sent event of a streamed answer (``chat.completion.chunk`` / ``text_completion``)."""
    if use is not None:  # the usage-only chunk of stream_options.include_usage
        choices = []
    elif chat:
        delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    else:
        choices = [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": use,
        **extra,
    }
