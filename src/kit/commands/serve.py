"""``python -m kit serve serve.registry=<modifier job dir> [serve.*=...] [router=rules|learned|none]``

Composes kit's config with ``phase=runtime``, loads the registry's base once and
its modifiers onto it, checks every modifier was trained on exactly this base,
and serves until interrupted. The first line printed is ``kit: serving ... at <url>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kit.core.config import compose, one_line, refuse_secret_overrides, refuse_secret_values
from kit.core.errors import KitError
from kit.core.identity import base_fingerprint, changed_adapter
from kit.runtime.registry import check_same_base, read_registry
from kit.runtime.serve.app import ServeApp
from kit.runtime.serve.http import bind, make_api, make_server, url_of

USAGE = (
    "usage: python -m kit serve serve.registry=<phase=modifier job dir> [serve.port=8000] "
    "[router=rules|learned|none] [key=value ...]"
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def config(args: list[str]):
    from omegaconf import OmegaConf

    if any(not a.count("=") for a in args):
        raise KitError(f"unexpected argument(s) {[a for a in args if '=' not in a]}; {USAGE}")
    refuse_secret_overrides(args)
    try:
        cfg = compose("train", ["phase=runtime", *args])
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise KitError(one_line(e)) from None
    refuse_secret_values(cfg)
    if not cfg.serve.registry:
        raise KitError("serve.registry is unset; expected a phase=modifier job dir (python -m kit train +experiment=modifiers)")
    return cfg


def api_key_of(cfg) -> str | None:
    """The key from ``serve.api_key_file`` or ``$KIT_API_KEY``; never the command line (refused there:
    kit.core.config.refuse_secret_overrides)."""
    if cfg.serve.api_key_file:
        path = Path(cfg.serve.api_key_file)
        try:
            key = path.read_text().strip()
        except OSError as e:
            raise KitError(
                f"serve.api_key_file={str(path)!r} is unreadable ({e.strerror}); expected a file holding the key"
            ) from None
        if not key:
            raise KitError(f"serve.api_key_file={str(path)!r} is empty; expected a file holding the key")
        return key
    return os.environ.get("KIT_API_KEY") or None


def build(cfg):
    """(app, server) ready to serve; every check done before the model loads (the port first)."""

    api_key = api_key_of(cfg)
    registry = read_registry(Path(cfg.serve.registry))
    base = Path(cfg.serve.base or registry.base)
    if not (base / "config.json").is_file():
        raise KitError(f"base model folder {str(base)!r} not found; expected the registry's base or serve.base=<folder>")
    sock = bind(str(cfg.serve.host), int(cfg.serve.port))  # held from here: nobody takes it while the model loads
    check_same_base(registry, base, base_fingerprint(base))
    for m in registry.modifiers:
        if not m.path.is_dir():
            raise KitError(f"modifier {m.name!r}: folder {str(m.path)!r} is missing; expected it next to {registry.path.name}")
        changed = changed_adapter(f"modifier {m.name!r}", m.path, m.record.get("content_hash"))
        if changed:  # never served under the name (and scores) of the adapter it was trained as
            raise KitError(changed)
    if cfg.serve.host not in LOOPBACK and not api_key:
        print(
            f"kit: warning: serving on {cfg.serve.host} without an API key: anyone who can reach it can use it", file=sys.stderr
        )
    app = ServeApp(cfg.serve, cfg.router, registry, base)
    banner = (
        f"kit: serving {len(app.registry.modifiers)} modifier(s) {app.registry.names()} on base {str(app.base)!r} "
        f"(router {app.router.kind}, batching {app.engine.batching}, context {app.context} tokens) at {url_of(sock)}"
    )
    api = make_api(app, api_key, int(cfg.serve.max_body_bytes), float(cfg.serve.client_timeout_s))
    return app, make_server(api, sock, cfg.serve, banner, app.engine)


def main(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cfg = config(args)
    _, server = build(cfg)
    server.run(sockets=[server.socket])  # SIGTERM / Ctrl-C: drain in-flight requests, then return
    print("kit: server stopped", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)  # nothing left to write; torch's native teardown takes seconds more on a busy machine
