"""``python -m kit report <sweep_dir>``: rebuild the sweep summary from the job dirs."""

from __future__ import annotations

from pathlib import Path

from kit.core.cli_parser import OneLineParser
from kit.core.errors import KitError
from kit.stages.sweep import write


def main(argv: list[str]) -> int:
    """``python -m kit report <sweep_dir>``: rebuild the sweep summary from the job dirs."""
    parser = OneLineParser(prog="kit report", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun's hydra.sweep.dir")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise KitError(f"sweep dir {str(args.sweep_dir)!r} does not exist; expected the hydra.sweep.dir of a multirun")
    write(args.sweep_dir.absolute())
    return 0
