"""The one way kit's closed sets are registered: each entry is defined by its own module.

A registry is a package whose modules each define an entry under one attribute name (``STRATEGY``,
``PHASE``, ``CHECK``, ``LAUNCHER``); ``discover`` imports them and returns the entries by name, so a
new entry is its module (and its enum value in ``kit.core.schema``), never a line in a list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def discover(package: str, path: Iterable[str], attribute: str, kind: type) -> dict[str, object]:
    """``{entry.name: entry}`` of every module of ``package`` (at ``path``) defining ``attribute`` as a ``kind``."""
    found = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        entry = getattr(importlib.import_module(f"{package}.{info.name}"), attribute, None)
        if isinstance(entry, kind):
            found[entry.name] = entry
    return found
