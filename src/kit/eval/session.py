"""What one command keeps alive between evaluations: resident bases and vLLM servers.

A command (``kit train``'s job, ``kit eval``, ``kit verify``) opens one session and
closes it with ``with``: the resident base is freed and every vLLM server stopped,
also on Ctrl-C or an error. Nothing is process-wide: two sessions share nothing, and
tests need no reset between them.

Inspect builds the ``peft/`` provider by name, so the provider cannot be handed the
session; it finds the running one through a context variable that ``with`` sets
(``current()``). A provider built with no session running (Inspect's own CLI) opens
a private one and closes it with the provider.
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from pathlib import Path

from kit.lora.resident import ResidentBase

_current: contextvars.ContextVar[EvalSession | None] = contextvars.ContextVar("kit_eval_session", default=None)


class EvalSession:
    def __init__(self, snapshot_on_device: bool = True):
        self.residents: dict[tuple, ResidentBase] = {}
        self.servers: dict[str, object] = {}  # served model -> kit.eval.strategies.vllm.Server
        self.base_loads = 0  # bases this session loaded (summaries and tests show the base is loaded once)
        self.snapshot_on_device = snapshot_on_device
        self.lock = threading.Lock()
        self._token = None

    def resident(
        self, base: Path, device: str, dtype: str, trust_remote_code: bool = False, max_adapters: int = 4
    ) -> ResidentBase:
        """The session's resident copy of ``base`` (loaded on first use only). One base
        stays resident: asking for another frees the previous one first."""
        key = (str(Path(base).resolve()), device, dtype, trust_remote_code)
        with self.lock:
            if key not in self.residents:
                self.residents.clear()
                self.residents[key] = ResidentBase(
                    Path(base), device, dtype, trust_remote_code, max_adapters, snapshot_on_device=self.snapshot_on_device
                )
                self.base_loads += 1
            resident = self.residents[key]
            resident.max_adapters = max(resident.max_adapters, max_adapters)
            return resident

    def close(self) -> None:
        """Stop every server and free every resident base."""
        with self.lock:
            servers, self.servers = list(self.servers.values()), {}
            self.residents.clear()
        for server in servers:
            server.stop()

    def __enter__(self) -> EvalSession:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        finally:
            if self._token is not None:
                _current.reset(self._token)
                self._token = None


def current() -> EvalSession | None:
    """The session of the running command, or None."""
    return _current.get()


@contextmanager
def session_scope():
    """The running session, or a new one that closes when the block ends."""
    running = current()
    if running is not None:
        yield running
        return
    with EvalSession() as session:
        yield session
