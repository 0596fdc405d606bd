"""The server's modifiers: one resident base (``kit.lora.resident``) and the registry's adapters on it.

``preload``: every modifier is attached at start (a bad one fails the start, not a
request). Otherwise a modifier is attached on first use, at most ``max_loaded`` stay
attached and the least recently used is evicted (ResidentBase's LRU), so memory stays
flat however many modifiers the registry holds. Either way the base is loaded once.
"""

from __future__ import annotations

import time
from pathlib import Path

from kit.core.errors import KitError
from kit.core.identity import changed_adapter
from kit.lora.resident import ResidentBase


class ModifierStore:
    def __init__(self, registry, base: Path, device: str, dtype: str, preload: bool, max_loaded: int):

        names = registry.names()
        if preload and max_loaded < len(names):
            raise KitError(
                f"serve.max_loaded={max_loaded} cannot hold the registry's {len(names)} modifiers "
                f"with serve.preload=true; expected serve.max_loaded>={len(names)} or serve.preload=false"
            )
        self.registry = registry
        self.folders = {m.name: m.path for m in registry.modifiers}
        self.hashes = {m.name: m.record.get("content_hash") for m in registry.modifiers}
        self.max_loaded = max_loaded
        start = time.perf_counter()
        self.resident = ResidentBase(base, device, dtype, max_adapters=max_loaded)  # the server's own
        self.base_load_seconds = time.perf_counter() - start
        self.attach_seconds: dict[str, float] = {}
        if preload:
            for name in names:
                self.adapter(name)

    def adapter(self, name: str, keep=()) -> str:
        """The PEFT adapter name of modifier ``name``, attaching it if it is not attached; the
        adapters in ``keep`` (rows in flight use them) are not evicted for it (AdapterBusy)."""
        start = time.perf_counter()
        loads = self.resident.adapter_loads
        folder = self.folders[name]
        if not self.is_attached(folder):  # loaded from disk now: the bytes must be the ones the registry recorded
            changed = changed_adapter(f"modifier {name!r}", folder, self.hashes.get(name))
            if changed:
                raise KitError(changed)
        peft_name = self.resident.attach(folder, keep=keep)
        if self.resident.adapter_loads != loads:
            self.attach_seconds[name] = time.perf_counter() - start
        return peft_name

    def is_attached(self, folder: Path) -> bool:
        return Path(folder).resolve() in {Path(p).resolve() for p in self.resident.attached.values()}

    def loaded(self) -> list[str]:
        attached = {Path(p).resolve() for p in self.resident.attached.values()}
        return [n for n, p in self.folders.items() if Path(p).resolve() in attached]
