"""``kit serve`` inside another kit process: the same app and HTTP server on a free loopback port, in a
thread, behind a one-time key held only in memory (never written or passed on a command line).

A job uses it to send its modifiers real requests through the real HTTP API (``phase=lifecycle``'s
``serve`` phase) without a second process. The job keeps its signals: Ctrl-C interrupts the job,
which stops the server on its way out.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kit.core.errors import KitError
from kit.runtime.registry import read_registry
from kit.runtime.serve.app import ServeApp
from kit.runtime.serve.http import bind, make_api, make_server, url_of

START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Local:
    url: str  # http://127.0.0.1:<port>/v1
    key: str
    app: ServeApp


@contextlib.contextmanager
def serving(serve_cfg, router_cfg, registry_dir: Path) -> Iterator[Local]:
    """The registry's modifiers served on 127.0.0.1 while the block runs; stopped (in-flight requests
    drained) when it ends, however it ends."""
    registry = read_registry(registry_dir)
    sock = bind("127.0.0.1", 0)
    app = ServeApp(serve_cfg, router_cfg, registry, registry.base)
    key = secrets.token_urlsafe(24)
    api = make_api(app, key, int(serve_cfg.max_body_bytes), float(serve_cfg.client_timeout_s))
    server = make_server(api, sock, serve_cfg, "", app.engine, signals=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="kit-serve-local", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise KitError(f"kit serve in process did not start within {START_TIMEOUT_S:g} s on {url_of(sock)}")
        time.sleep(0.02)
    try:
        yield Local(url_of(sock), key, app)
    finally:
        server.should_exit = True
        thread.join(float(serve_cfg.drain_timeout_s) + 10)
        app.engine.close()
