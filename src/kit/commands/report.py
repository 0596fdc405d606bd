"""``python -m kit report <sweep_dir>``: rebuild the sweep summary from the job dirs."""

from __future__ import annotations

import sys
from pathlib import Path

from kit.core.cli_parser import OneLineParser
from kit.core.errors import KitError
from kit.core.locks import locked
from kit.sweep.report import write


def main(argv: list[str]) -> int:
    """``python -m kit report <sweep_dir>``: rebuild the sweep summary from the job dirs."""
    parser = OneLineParser(prog="kit report", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun's hydra.sweep.dir")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise KitError(f"sweep dir {str(args.sweep_dir)!r} does not exist; expected the hydra.sweep.dir of a multirun")
    with locked(args.sweep_dir.absolute(), "sweep dir"):  # one writer per sweep dir
        summary = write(args.sweep_dir.absolute())
    if not any(r["status"] == "done" for r in summary["jobs"]):  # nothing to report: say so, exit non-zero
        states = sorted({r["status"] for r in summary["jobs"]})
        print(
            f"kit: error: none of the {len(summary['jobs'])} jobs of {str(args.sweep_dir)!r} is done "
            f"({', '.join(states)}); "
            "expected at least one finished job (<n>/summary.json); the table lists why each is not",
            file=sys.stderr,
        )
        return 1
    return 0
