"""argparse for kit's non-Hydra commands, with kit's one-line error format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"kit: error: {message}; see `python -m {self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def target_and_overrides(args: list[str], usage: str) -> tuple[Path, list[str]] | None:
    """``<job dir | sweep dir> [key=value ...]`` (shared with ``kit verify``); None after printing usage."""
    paths = [a for a in args if "=" not in a and not a.startswith("-")]
    if len(paths) != 1 or any(a.startswith("-") for a in args):
        print(usage, file=sys.stderr)
        return None
    return Path(paths[0]), [a for a in args if "=" in a]
