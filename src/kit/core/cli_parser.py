"""argparse for kit's non-Hydra commands, with kit's one-line error format."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"kit: error: {message}; see `python -m {self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)
