"""OpenAI request reading and response shaping, shared by ``kit serve`` and the vLLM stand-in.

Only what both servers need: prompts from ``messages`` / ``prompt``, generation
settings from a request body, the completion and chat-completion response
objects, and a JSON HTTP handler base (body size limit, bad JSON -> 400).
"""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler


class ApiError(Exception):
    """An HTTP error answered as JSON; ``message`` says what was wrong and what was expected."""

    def __init__(self, code: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code, self.message, self.kind = code, message, kind


def text_of(content) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ApiError(400, "message content must be a string or a list of {type, text} parts")


def chat_prompt(tokenizer, messages) -> str:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects")
    plain = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role' and a 'content'")
        plain.append({"role": m["role"], "content": text_of(m.get("content"))})
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)


def completion_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (one prompt per request)")
    return prompt


def number(body: dict, key: str, default, low: float, high: float, kind=float):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ApiError(400, f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ApiError(400, f"{key!r} is {value}; expected {low} to {high}")
    return kind(value)


def sampling(body: dict, default_max_tokens: int, max_tokens_limit: int) -> dict:
    """Generation settings of a request: greedy when temperature is 0 (the default)."""
    limit = body.get("max_completion_tokens") if body.get("max_tokens") is None else body.get("max_tokens")
    max_tokens = number({"max_tokens": limit}, "max_tokens", default_max_tokens, 1, max_tokens_limit, int)
    temperature = number(body, "temperature", 0.0, 0.0, 2.0)
    min_tokens = number(body, "min_tokens", 0, 0, max_tokens, int)  # vLLM's extension: no stop before this
    return {
        "max_new_tokens": max_tokens,
        "min_new_tokens": min_tokens,
        "temperature": temperature,
        "top_p": number(body, "top_p", 1.0, 0.0, 1.0),
        "seed": number(body, "seed", 0, 0, 2**63 - 1, int),
    }


def completion_response(
    model: str, text: str, prompt_tokens: int, completion_tokens: int, finish: str, chat: bool, **extra
) -> dict:
    choice = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        if chat
        else {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    )
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        **extra,
    }


def model_entry(model_id: str, owned_by: str, **extra) -> dict:
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": owned_by, **extra}


class JsonHandler(BaseHTTPRequestHandler):
    """JSON replies, and request bodies read with a size limit (``max_body_bytes``)."""

    max_body_bytes = 1_000_000
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: a server log line per request is noise in tests
        pass

    def reply(self, code: int, payload, headers: dict | None = None) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> dict:
        """The request body as a JSON object, or ApiError 411/413/400."""
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise ApiError(411, "a Content-Length header is required (chunked bodies are not accepted)")
            length = "0"
        if not length.isdigit():
            self.close_connection = True
            raise ApiError(400, f"Content-Length {length!r} is not a number")
        if int(length) > self.max_body_bytes:
            self.discard(int(length))
            raise ApiError(413, f"request body is {length} bytes; the limit is {self.max_body_bytes} (serve.max_body_bytes)")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise ApiError(400, f"request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def discard(self, length: int, most: int = 64 << 20) -> None:
        """Skip an oversized body so the client reads our 413; past ``most``, just hang up."""
        if length > most:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)
