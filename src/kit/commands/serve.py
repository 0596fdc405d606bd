"""``python -m kit serve serve.registry=<modifier job dir> [serve.*=...] [router=rules|learned|none]``

Composes kit's config with ``phase=runtime``, loads the registry's base once and
its modifiers onto it, checks every modifier was trained on exactly this base,
and serves until interrupted. The first line printed is ``kit: serving ... at <url>``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from kit.core.config import compose, one_line
from kit.core.errors import KitError
from kit.core.identity import changed_adapter
from kit.stages.modifiers import base_fingerprint, check_same_base, read_registry
from kit.stages.serve.app import ServeApp
from kit.stages.serve.http import make_server

USAGE = "usage: python -m kit serve serve.registry=<phase=modifier job dir> [serve.port=8000] [router=rules|learned|none] [key=value ...]"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def config(args: list[str]):
    from omegaconf import OmegaConf


    if any(not a.count("=") for a in args):
        raise KitError(f"unexpected argument(s) {[a for a in args if '=' not in a]}; {USAGE}")
    try:
        cfg = compose("train", ["phase=runtime", *args])
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise KitError(one_line(e)) from None
    if not cfg.serve.registry:
        raise KitError("serve.registry is unset; expected a phase=modifier job dir (python -m kit train +experiment=modifiers)")
    return cfg


def build(cfg):
    """(app, server) ready to serve; every check done before the socket opens."""

    registry = read_registry(Path(cfg.serve.registry))
    base = Path(cfg.serve.base or registry.base)
    if not (base / "config.json").is_file():
        raise KitError(f"base model folder {str(base)!r} not found; expected the registry's base or serve.base=<folder>")
    check_same_base(registry, base, base_fingerprint(base))
    for m in registry.modifiers:
        if not m.path.is_dir():
            raise KitError(f"modifier {m.name!r}: folder {str(m.path)!r} is missing; expected it next to {registry.path.name}")
        changed = changed_adapter(f"modifier {m.name!r}", m.path, m.record.get("content_hash"))
        if changed:  # never served under the name (and scores) of the adapter it was trained as
            raise KitError(changed)
    api_key = cfg.serve.api_key or os.environ.get("KIT_API_KEY") or None
    if cfg.serve.host not in LOOPBACK and not api_key:
        print(f"kit: warning: serving on {cfg.serve.host} without an API key: anyone who can reach it can use it",
              file=sys.stderr)
    app = ServeApp(cfg.serve, cfg.router, registry, base)
    server = make_server(app, cfg.serve.host, int(cfg.serve.port), api_key, int(cfg.serve.max_body_bytes))
    return app, server


def stop(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM ends serve_forever the way Ctrl-C does


def main(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cfg = config(args)
    app, server = build(cfg)
    host, port = server.server_address[:2]
    print(f"kit: serving {len(app.registry.modifiers)} modifier(s) {app.registry.names()} on base {str(app.base)!r} "
          f"(router {app.router.kind}, batching {app.engine.batching}) at http://{host}:{port}/v1", flush=True)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
