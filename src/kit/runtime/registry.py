"""The modifier registry (``modifiers.json``) and base identity.

``phase=modifier`` writes the registry next to the modifiers it trained; the
server (``kit.runtime.serve``) reads it. A modifier is tied to the exact base it was
trained on: ``base_fingerprint`` hashes every weight tensor of the base's
safetensors files (name, dtype, shape, bytes), so a base with the same shapes
but other weights (a merged model, another fine-tune) is told apart.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kit.core.errors import KitError
from kit.core.identity import read_lineage

REGISTRY = "modifiers.json"
FORMAT = "kit.modifiers/1"
RESERVED = ("base", "auto")  # model names a request may use besides the modifiers'
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> None:
    if not NAME.match(name) or name in RESERVED:
        raise KitError(
            f"modifier name {name!r} is not allowed; expected letters, digits, _ . - "
            f"(at most 64), and not one of {list(RESERVED)}"
        )


@dataclass
class Modifier:
    name: str
    path: Path  # the PEFT adapter folder
    rank: int
    base_fingerprint: str
    keywords: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    dataset: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)  # the registry entry as written


@dataclass
class Registry:
    path: Path
    base: Path
    base_fingerprint: str
    modifiers: list[Modifier]
    learned_router: Path | None

    def names(self) -> list[str]:
        return [m.name for m in self.modifiers]


def write_registry(job_dir: Path, base: Path, fingerprint: str, entries: list[dict], router_file: str | None) -> Path:
    registry = {
        "format": FORMAT,
        "created": time.time(),
        "base": {"path": str(base), "fingerprint": fingerprint, "lineage": read_lineage(base)},
        "modifiers": entries,
        "router": {"learned": router_file},
    }
    path = job_dir / REGISTRY
    path.write_text(json.dumps(registry, indent=2))
    return path


def registry_file(target: Path) -> Path:
    target = Path(target)
    path = target / REGISTRY if target.is_dir() else target
    if not path.is_file():
        raise KitError(f"no modifier registry at {str(path)!r}; expected a phase=modifier job dir or its {REGISTRY}")
    return path


def read_registry(target: Path) -> Registry:
    """The registry of a modifier job dir (paths relative to it, so a moved dir still works)."""
    path = registry_file(target)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        modifiers = [modifier_of(path.parent, e) for e in data["modifiers"]]
        base = Path(data["base"]["path"])
        fingerprint = data["base"]["fingerprint"]
    except (ValueError, KeyError, TypeError) as e:
        raise KitError(
            f"{str(path)!r} is not a kit modifier registry ({e}); expected {FORMAT} written by phase=modifier"
        ) from None
    learned = (data.get("router") or {}).get("learned")
    return Registry(path, base, fingerprint, modifiers, path.parent / learned if learned else None)


def modifier_of(root: Path, entry: dict) -> Modifier:
    check_name(entry["name"])
    return Modifier(
        entry["name"],
        root / entry["path"],
        int(entry["rank"]),
        entry["base_fingerprint"],
        list(entry.get("keywords", [])),
        list(entry.get("patterns", [])),
        entry.get("dataset", {}),
        entry,
    )


def check_same_base(registry: Registry, base: Path, fingerprint: str) -> None:
    """Refuse any modifier trained on another base than the one served."""
    for m in registry.modifiers:
        if m.base_fingerprint != fingerprint:
            raise KitError(
                f"modifier {m.name!r} was trained on another base (weights {m.base_fingerprint[:12]}) than the "
                f"served base {str(base)!r} (weights {fingerprint[:12]}); expected modifiers trained on this base"
            )
