"""``python -m kit report <sweep_dir> [--html]``: rebuild the sweep summary from the job dirs.

Writes ``sweep_summary.{json,md,png}`` and the page ``sweep_report.html`` (kit.sweep.html);
``--html`` also bundles Inspect's static viewer of every job's logs into ``inspect_bundle/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kit.core.cli_parser import OneLineParser
from kit.core.errors import KitError
from kit.core.locks import locked
from kit.sweep.bundle import write_bundle
from kit.sweep.html import PAGE
from kit.sweep.report import write, write_html


def main(argv: list[str]) -> int:
    """``python -m kit report <sweep_dir> [--html]``: rebuild the sweep summary from the job dirs.

    Writes ``sweep_summary.{json,md,png}`` and the page ``sweep_report.html`` (kit.sweep.html);
    ``--html`` also bundles Inspect's static viewer of every job's logs into ``inspect_bundle/``.
    """
    parser = OneLineParser(prog="kit report", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun's hydra.sweep.dir")
    parser.add_argument(
        "--html", action="store_true", help=f"also bundle Inspect's log viewer beside {PAGE} (inspect_bundle/, about 12 MB)"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise KitError(f"sweep dir {str(args.sweep_dir)!r} does not exist; expected the hydra.sweep.dir of a multirun")
    with locked(args.sweep_dir.absolute(), "sweep dir"):  # one writer per sweep dir
        summary = write(args.sweep_dir.absolute())
        if args.html and any(r["status"] == "done" for r in summary["jobs"]):
            bundle = write_bundle(args.sweep_dir.absolute(), summary)
            write_html(args.sweep_dir.absolute(), summary)  # now with the link to the viewer
    if not any(r["status"] == "done" for r in summary["jobs"]):  # nothing to report: say so, exit non-zero
        states = sorted({r["status"] for r in summary["jobs"]})
        print(
            f"kit: error: none of the {len(summary['jobs'])} jobs of {str(args.sweep_dir)!r} is done "
            f"({', '.join(states)}); "
            "expected at least one finished job (<n>/summary.json); the table lists why each is not",
            file=sys.stderr,
        )
        return 1
    if args.html:
        print(f"kit: Inspect's viewer of the jobs' logs: {bundle}/index.html (serve it over HTTP to open it)")
    print(f"kit: sweep page: {args.sweep_dir.absolute() / PAGE}")
    return 0
