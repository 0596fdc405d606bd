"""``python -m kit <command> [hydra overrides]``.

The subcommand is removed from ``sys.argv`` before Hydra parses it. Before the
Hydra app starts, the overrides are composed once (each sweep point too) so a
bad option, type or value fails in one line, before any job runs.
"""

from __future__ import annotations

import importlib
import sys

from kit.core.config import refuse_secret_overrides
from kit.core.errors import KitError
from kit.core.jobdir import skip_message
from kit.core.log import quiet_warnings, setup

COMMANDS = {"train": "kit.commands.train:train_main"}  # Hydra apps: overrides composed and checked first
PLAIN_COMMANDS = {  # main(args) -> exit status
    "eval": "kit.commands.eval:main",
    "report": "kit.commands.report:main",
    "status": "kit.commands.status:main",
    "collect": "kit.commands.status:collect",
    "describe": "kit.commands.describe:main",
    "plugins": "kit.commands.plugins:main",
    "serve": "kit.commands.serve:main",
    "verify": "kit.commands.verify:main",
}
USAGE = (
    "usage: python -m kit {train,eval,verify,report,status,collect,describe,plugins,serve} ...  "
    "(train: [group=option ...] [key=value ...] [-m];"
    " eval|verify: <job dir | sweep dir> [key=value ...]; report: <sweep_dir>;"
    " status: <sweep_dir> [--rerun-failed]; collect: <sweep_dir>;"
    " describe: [model=<preset>] [model.path=DIR] [--json];"
    " plugins: [--json]; serve: serve.registry=<modifier job dir> [serve.port=N] [router=...])"
)


INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    setup()
    with quiet_warnings():  # the known-harmless warnings of the stack (kit.core.log), for this command only
        try:
            return dispatch(list(sys.argv[1:] if argv is None else argv))
        except KeyboardInterrupt as e:  # one line, no traceback: what was kept and where (the job says)
            print(f"kit: interrupted: {e}" if str(e) else "kit: interrupted (Ctrl-C); nothing was marked done", file=sys.stderr)
            return INTERRUPTED_EXIT


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:  # every command: a secret never reaches Hydra, submitit, a manifest or a log
        refuse_secret_overrides(rest)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return 2
    if command in PLAIN_COMMANDS:
        return run_plain(PLAIN_COMMANDS[command], rest)
    if command not in COMMANDS:
        expected = sorted({**COMMANDS, **PLAIN_COMMANDS})
        print(f"kit: error: unknown command {command!r}; expected one of {expected}", file=sys.stderr)
        return 2
    try:
        from kit.sweep.preflight import check_overrides  # training's stack: not imported by plain commands

        finished = check_overrides("train", rest)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return 2
    if finished:
        print(skip_message(finished))
        return 0
    module, func = COMMANDS[command].split(":")
    # argparse stops at the first override, so put -m first wherever the user wrote it
    multirun = [a for a in rest if a in ("-m", "--multirun")]
    sys.argv = [f"kit {command}", *multirun, *(a for a in rest if a not in multirun)]
    getattr(importlib.import_module(module), func)()
    return 0


def run_plain(target: str, args: list[str]) -> int:
    module, func = target.split(":")
    try:
        return getattr(importlib.import_module(module), func)(args)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
