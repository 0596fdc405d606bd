"""The HTTP side of ``kit serve``: FastAPI on uvicorn, on 127.0.0.1 by default.

Bad input never takes the server down and never fails another client's request:
a body over ``serve.max_body_bytes`` gets 413, a body that is not a valid request
400 naming the field (``kit.runtime.serve.schemas``), an unknown model 404 naming the known
ones, a missing or wrong API key 401, malformed HTTP 400 (uvicorn/h11); anything
unexpected is a 500 with its message, and the next request is served as usual.

Time limits: a client has ``serve.client_timeout_s`` to send its headers
(``Protocol``) and again its body (408 after), so stalled connections are closed;
generation has ``serve.request_timeout_s`` (504 after); a client that hangs up
cancels its generation. ``stream=true`` answers with server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import signal
import socket
import sys
import traceback

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from kit.core.errors import KitError
from kit.core.openai_api import ApiError
from kit.runtime.serve import schemas
from kit.runtime.serve.engine import Cancelled, DeadlineExceeded, ServerStopping

ROUTES = {"/v1/chat/completions": True, "/v1/completions": False}
DRAIN_MOST = 64 << 20  # past this much of an oversized body, hang up instead of reading it


def error_body(e: ApiError) -> dict:
    return {"error": {"message": e.message, "type": e.kind, "param": None, "code": e.code}}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e), status_code=e.code)


def authorised(header: str | None, api_key: str | None) -> bool:
    """``Authorization: Bearer <key>``; the scheme is case-insensitive (RFC 9110 11.1)."""
    if not api_key:
        return True
    scheme, _, token = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def require_key(request: Request, api_key: str | None) -> None:
    if not authorised(request.headers.get("authorization"), api_key):
        raise ApiError(401, "missing or wrong API key; expected 'Authorization: Bearer <serve.api_key>'", "authentication_error")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, or 413 past ``limit`` (read and dropped up to DRAIN_MOST so the client sees the 413),
    or 408 when the client takes longer than ``timeout`` to send it."""
    declared = request.headers.get("content-length")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > DRAIN_MOST:
                break

    try:
        if declared is not None and declared.isdigit() and int(declared) > DRAIN_MOST:
            size = int(declared)  # not worth reading: answer now, uvicorn closes the connection
        else:
            await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within serve.client_timeout_s={timeout:g}", "timeout") from None
    if size > limit:
        raise ApiError(413, f"request body is {size} bytes; the limit is {limit} (serve.max_body_bytes)")
    return b"".join(chunks)


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def make_api(app, api_key: str | None, max_body_bytes: int, client_timeout: float) -> FastAPI:
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return error_response(e)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request, e):
        if request.url.path.startswith("/v1/") and not authorised(request.headers.get("authorization"), api_key):
            return error_response(
                ApiError(
                    401, "missing or wrong API key; expected 'Authorization: Bearer <serve.api_key>'", "authentication_error"
                )
            )
        if e.status_code == 405:
            return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}", "not_found"))
        known = ["GET /health", "GET /v1/models", *(f"POST {r}" for r in ROUTES)]
        return error_response(
            ApiError(
                e.status_code, f"no endpoint {request.method} {request.url.path[:100]}; expected one of {known}", "not_found"
            )
        )

    @api.exception_handler(Exception)
    async def crash(request, e):  # a bug or a model failure: this request fails, the server goes on
        return error_response(internal_error(e))

    @api.get("/health")
    async def health(request: Request):
        """Liveness for anyone (load balancers need no key); the server's counters for key holders only."""
        if not authorised(request.headers.get("authorization"), api_key):
            return {"status": "ok"}
        return {
            "status": "ok",
            "requests": app.engine.rows,
            "generate_calls": app.engine.batches,
            "queued": app.engine.jobs.qsize(),
            "busy": app.engine.busy,
            "cancelled": app.engine.cancelled,
            "timed_out": app.engine.timed_out,
            "preempted": app.engine.preempted,
        }

    @api.get("/v1/models")
    async def models(request: Request):
        require_key(request, api_key)
        return app.models()

    async def complete(request: Request, chat: bool):
        require_key(request, api_key)
        raw = await read_body(request, max_body_bytes, client_timeout)
        # tokenizing and templating are CPU work: off the event loop
        prepared = await asyncio.to_thread(lambda: app.prepare(schemas.parse(raw, chat), chat))
        headers = {"X-Kit-Modifier": prepared.modifier or "base"}
        if prepared.stream:
            return StreamingResponse(stream(app, prepared), media_type="text/event-stream", headers=headers)
        result = await run_job(app, prepared, request)
        return JSONResponse(app.response(prepared, result), headers=headers)

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, True)

    @api.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, False)

    return api


def notifier(loop: asyncio.AbstractEventLoop, callback):
    """A callback the engine thread may call: it runs ``callback`` on the event loop."""

    def call(*args):
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(callback, *args)

    return call


async def run_job(app, prepared, request: Request) -> tuple:
    """The job's result; cancelled when the client hangs up, 504 past the deadline."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    job = app.job(prepared, on_done=notifier(loop, lambda: finished.done() or finished.set_result(None)))
    app.engine.submit(job)
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({finished, gone}, timeout=app.timeout + 1, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not job.done.is_set():
            job.cancel()
    if gone.done() and not gone.cancelled() and not job.done.is_set():
        raise ApiError(499, "the client closed the connection; generation cancelled", "cancelled")
    if not job.done.is_set():
        raise ApiError(504, str(DeadlineExceeded(app.timeout)), "timeout")
    return outcome(job)


def outcome(job) -> tuple:
    if job.error is not None:
        raise api_error(job.error)
    return job.result


def api_error(e: BaseException) -> ApiError:
    """What the client is told of a job that ended in ``e``."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ServerStopping):
        return ApiError(503, str(e), "unavailable")
    if isinstance(e, DeadlineExceeded):
        return ApiError(504, str(e), "timeout")
    if isinstance(e, Cancelled):
        return ApiError(499, "the request was cancelled", "cancelled")
    return internal_error(e)


def sse(payload) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


async def stream(app, p):
    """Server-sent events, as the openai client reads them: chunks, then ``data: [DONE]``."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = app.job(p, on_text=notifier(loop, events.put_nowait), on_done=notifier(loop, lambda: events.put_nowait(None)))
    rid, extra = schemas.new_id(p.chat), p.extra()
    app.engine.submit(job)
    try:
        yield sse(schemas.chunk(rid, p.model, p.chat, "", None, first=True, **extra))
        while True:
            try:
                text = await asyncio.wait_for(events.get(), app.timeout + 1)
            except TimeoutError:
                job.cancel()
                text = None
            if text is None:
                break
            yield sse(schemas.chunk(rid, p.model, p.chat, text, None, **extra))
        if not job.done.is_set():
            yield sse(error_body(ApiError(504, str(DeadlineExceeded(app.timeout)), "timeout")))
        elif job.error is not None:
            yield sse(error_body(api_error(job.error)))
        else:
            text, n_in, n_out, finish = job.result
            yield sse(schemas.chunk(rid, p.model, p.chat, None, finish, **extra))
            if p.include_usage:
                yield sse(schemas.chunk(rid, p.model, p.chat, None, None, use=schemas.usage(n_in, n_out)))
        yield sse("[DONE]")
    finally:
        job.cancel()  # a client that leaves mid-stream stops its generation


# -- the server ---------------------------------------------------------------------------


class Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for a request's headers: a client that connects and
    stalls (or trickles bytes) is closed after ``client_timeout`` seconds, holding nothing."""

    client_timeout = 30.0

    def connection_made(self, transport) -> None:
        self._headers_timer = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._headers_timer = self.loop.call_later(self.client_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # headers are in; the body has its own limit
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


class Server(uvicorn.Server):
    """uvicorn's server; SIGTERM and Ctrl-C drain (in-flight requests finish, up to the drain
    deadline) and the process then exits 0 instead of re-raising the signal."""

    def __init__(self, config, banner: str = "", engine=None, signals: bool = True):
        super().__init__(config)
        self.banner = banner
        self.engine = engine  # its unfinished jobs are answered 503 when the drain deadline passes
        self.signals = signals  # False: served from a thread of another kit process, which owns the signals

    async def shutdown(self, sockets=None) -> None:
        """uvicorn's drain, with the deadline kept by kit: just before it, every request still waiting
        is answered 503 in JSON (uvicorn would cancel its task: text/plain 500 and a traceback each)."""
        drain = float(self.config.timeout_graceful_shutdown or 0)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.0, drain - 1.0), self.stop_in_flight, drain) if self.engine is not None else None
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()

    def stop_in_flight(self, drain: float) -> None:
        stopped = self.engine.stop_all(drain)
        if stopped:
            print(f"kit: drain deadline ({drain:g} s) reached: {stopped} request(s) answered 503", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self):
        if not self.signals:  # only the main thread may set handlers
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            print(
                f"kit: {signal.Signals(sig).name}: finishing in-flight requests "
                f"(up to {self.config.timeout_graceful_shutdown}s), then stopping",
                file=sys.stderr,
                flush=True,
            )
        super().handle_exit(sig, frame)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.banner:
            print(self.banner, flush=True)


def bind(host: str, port: int):
    """A socket bound to (host, port), or KitError in one line: checked before the model loads."""
    import errno

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise KitError(f"serve.host={host!r} is not an address ({e.strerror}); expected e.g. 127.0.0.1 or ::1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise KitError(
                f"port {port} on {host} is in use; expected a free port (serve.port=<n>, or serve.port=0 for any free one)"
            ) from None
        raise KitError(
            f"cannot listen on {host} port {port} ({e.strerror}); expected an address of this machine "
            f"(serve.host) and a port you may use (serve.port)"
        ) from None
    return sock


def url_of(sock) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def internal_error(e: BaseException) -> ApiError:
    """A failure the client did not cause: the client gets an incident id, never the exception's text
    (it can name files, paths or other requests' data); the server's log gets the traceback once."""
    incident = secrets.token_hex(4)
    print(f"kit: error: incident {incident}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    traceback.print_exception(e)
    message = f"internal error (incident {incident}, in the server's log); the request was not answered"
    return ApiError(500, message, "server_error")


def make_server(api: FastAPI, sock, cfg, banner: str, engine=None, signals: bool = True) -> Server:
    protocol = type("Protocol", (Protocol,), {"client_timeout": float(cfg.client_timeout_s)})
    config = uvicorn.Config(
        api,
        http=protocol,
        lifespan="off",
        log_level="error",
        access_log=False,
        backlog=int(cfg.backlog),
        timeout_keep_alive=int(cfg.client_timeout_s),
        timeout_graceful_shutdown=int(cfg.drain_timeout_s),
    )
    server = Server(config, banner, engine, signals)
    server.socket = sock
    return server
