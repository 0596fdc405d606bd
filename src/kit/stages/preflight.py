"""Compose the config for every sweep point before Hydra runs any job, and turn
Hydra/OmegaConf errors into one line that names the bad value."""

from __future__ import annotations

import itertools
from pathlib import Path

from kit.core.errors import KitError

MAX_POINTS = 256
HYDRA_FLAGS = ("-m", "--multirun", "--info", "--cfg", "-c", "--resolve", "--hydra-help", "--help", "-h")


def split_args(args: list[str]) -> tuple[list[str], bool]:
    overrides = [a for a in args if not a.startswith("-")]
    multirun = "-m" in args or "--multirun" in args
    return overrides, multirun


def expand(overrides: list[str], sweep_params: dict) -> list[list[str]]:
    """Every combination of sweep values, as plain overrides (Hydra's basic sweeper order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = overrides + [f"{k}={v}" for k, v in sweep_params.items()
                         if not any(o.split("=")[0].lstrip("+~") == k for o in overrides)]
    choices = []
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        values = [o.get_value_element_as_str()] if not o.is_sweep_override() else [
            str(v) for v in o.sweep_string_iterator()]
        choices.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.islice(itertools.product(*choices), MAX_POINTS)]


def compose(config_name: str, overrides: list[str], hydra_cfg: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from kit.core.config import conf_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides, return_hydra_config=hydra_cfg)


def one_line(e: Exception) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    head = lines[0].rstrip(".")
    cause = [ln.strip() for ln in str(e.__cause__ or "").splitlines() if ln.strip()]
    if cause:  # OmegaConf's reason: what was wrong and the full key
        head += f": {cause[0]}"
        lines += cause[1:]
    if "Could not find" in head or "Could not load" in head:
        options = [ln for ln in lines[1:] if not ln.startswith(("Config search path", "provider=", "Available"))]
        options = [o for o in options if "/" not in o and "=" not in o]
        if options:
            head += f"; expected one of {options}"
    key = next((ln for ln in lines if ln.startswith("full_key:")), None)
    if key and key not in head:
        head += f" ({key})"
    return head


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides without sweeps (``a=1,2``), for composing the Hydra config itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [line for line, o in zip(overrides, parsed) if not o.is_sweep_override()]


def check_overrides(config_name: str, args: list[str]) -> Path | None:
    """Compose (and check the inputs of) every sweep point; raise KitError if any is bad.

    Returns the run dir when a single run targets a job dir that already finished:
    Hydra would rewrite its ``.hydra/`` files, so the caller must not start Hydra.
    A single run into a dir with an unfinished attempt moves that attempt to
    ``<dir>/attempts/<n>/`` first (sweeps do this in kit.stages.launcher).
    """
    from omegaconf import OmegaConf

    from kit.stages.job import is_done, preflight, set_aside

    overrides, multirun = split_args(args)
    plain = [o for o in overrides if not o.startswith("hydra")]
    try:
        first = compose(config_name, fixed_overrides(overrides), hydra_cfg=True)
        if not multirun:
            run_dir = Path(first.hydra.run.dir)
            if is_done(run_dir):
                return run_dir
        sweep = dict(first.hydra.sweeper.params or {}) if multirun else {}
        points = expand(plain, sweep) if multirun else [plain]
        for point in points:
            cfg = compose(config_name, point)
            OmegaConf.resolve(cfg)
            preflight(cfg)  # model folder, dataset file, tasks: before any job dir exists
    except KitError:
        raise
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise KitError(one_line(e)) from None
    moved = None if multirun else set_aside(run_dir)
    if moved:
        print(f"kit: unfinished attempt in {run_dir} moved to {moved}; running it again")
    return None
