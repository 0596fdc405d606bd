"""``python -m kit <command> [hydra overrides]``.

The subcommand is removed from ``sys.argv`` before Hydra parses it. Before the
Hydra app starts, the overrides are composed once (each sweep point too) so a
bad option, type or value fails in one line, before any job runs.
"""

from __future__ import annotations

import sys

from kit.errors import KitError

COMMANDS = {"train": "kit.cli:train_main", "describe": "kit.describe:main", "plugins": "kit.plugins:main"}
PLAIN = ("describe", "plugins")  # argparse commands: no Hydra app, their main(argv) returns the exit code
USAGE = ("usage: python -m kit {train} [group=option ...] [key=value ...] [-m]\n"
         "       python -m kit describe [model=<preset>] [model.path=DIR] [--json]\n"
         "       python -m kit plugins [--json]")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"kit: error: unknown command {command!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module, func = COMMANDS[command].split(":")
    import importlib

    if command in PLAIN:
        return getattr(importlib.import_module(module), func)(rest)
    try:
        from kit.preflight import check_overrides

        finished = check_overrides("train", rest)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return 2
    if finished:
        from kit.job import skip_message

        print(skip_message(finished))
        return 0
    # argparse stops at the first override, so put -m first wherever the user wrote it
    multirun = [a for a in rest if a in ("-m", "--multirun")]
    sys.argv = [f"kit {command}", *multirun, *(a for a in rest if a not in multirun)]
    getattr(importlib.import_module(module), func)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
