"""Hydra's command line as kit reads it: the overrides, the flags, every sweep point."""

from __future__ import annotations

import itertools
import math

from kit.core.errors import KitError

# Every point of a sweep is composed and its inputs checked before any job runs (~0.4 s a point on a
# loaded 2-core machine): a larger sweep is refused rather than checked in part.
MAX_POINTS = 256

HYDRA_FLAGS = ("-m", "--multirun", "--info", "--cfg", "-c", "--resolve", "--hydra-help", "--help", "-h")

# Hydra's flags that take the next argument as their value (``--cfg job``); --info's is optional
VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}

INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}

SHOW_ONLY = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help"}  # Hydra prints and exits: no job runs


def split_args(args: list[str]) -> tuple[list[str], bool]:
    """(overrides, multirun) from the arguments of ``kit train``: Hydra's flags and their values dropped."""
    overrides, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in VALUE_FLAGS or (a in ("--info", "-i") and i + 1 < len(args) and args[i + 1] in INFO_TOPICS)
        else:
            overrides.append(a)
    multirun = "-m" in args or "--multirun" in args
    return overrides, multirun


def show_only(args: list[str]) -> bool:
    """Hydra only prints (``--cfg job``, ``--info``, ``--help``): no job dir is touched."""
    return any(a.partition("=")[0] in SHOW_ONLY for a in args)


def expand(overrides: list[str], sweep_params: dict) -> list[list[str]]:
    """Every combination of sweep values, as plain overrides (Hydra's basic sweeper order); a
    KitError for a sweep of more than MAX_POINTS points (none is left unchecked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = overrides + [
        f"{k}={v}" for k, v in sweep_params.items() if not any(o.split("=")[0].lstrip("+~") == k for o in overrides)
    ]
    choices = []
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        values = [o.get_value_element_as_str()] if not o.is_sweep_override() else [str(v) for v in o.sweep_string_iterator()]
        choices.append([f"{key}={v}" for v in values])
    points = math.prod(len(c) for c in choices)
    if points > MAX_POINTS:
        raise KitError(
            f"the sweep has {points} points; kit checks every point before any job runs and takes at most "
            f"{MAX_POINTS}; expected at most {MAX_POINTS} points (split it into sweeps with their own hydra.sweep.dir)"
        )
    return [list(c) for c in itertools.product(*choices)]


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides without sweeps (``a=1,2``), for composing the Hydra config itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [line for line, o in zip(overrides, parsed) if not o.is_sweep_override()]
