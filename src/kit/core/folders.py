"""Folders that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_atomically(target: Path, build: Callable[[Path], None], prefix: str) -> None:
    """Run ``build(scratch)`` in a scratch folder beside ``target`` and rename it into place:
    an interrupted build leaves no half folder behind, and concurrent jobs never read one.
    When another process finished the same folder first, its copy is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process won the race
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cache_root() -> Path:
    return Path(os.environ.get("KIT_CACHE", Path.home() / ".cache" / "kit"))


def user_config_dir() -> Path:
    """The user's own kit configs (site launcher profiles, experiments): ``$KIT_CONFIG_DIR``, default ``~/.config/kit``."""
    return Path(os.environ.get("KIT_CONFIG_DIR") or Path.home() / ".config" / "kit").expanduser()
