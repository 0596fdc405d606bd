"""Every sweep point composed and checked before Hydra runs any job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.config import compose, conf_dir, one_line, refuse_secret_overrides, refuse_secret_values
from kit.core.errors import KitError
from kit.core.identity import run_id
from kit.core.jobdir import JobDir
from kit.core.locks import hold
from kit.core.log import get as get_logger
from kit.core.overrides import expand, fixed_overrides, show_only, split_args
from kit.job.pipeline import refuse_other_config
from kit.job.preflight import check_inputs
from kit.sweep.launchers import entry_for

log = get_logger(__name__)


def check_overrides(config_name: str, args: list[str]) -> Path | None:
    """Compose (and check the inputs of) every sweep point; raise KitError if any is bad.

    Returns the run dir when a single run targets a job dir that already finished:
    Hydra would rewrite its ``.hydra/`` files, so the caller must not start Hydra.
    A single run into a dir with an unfinished attempt moves that attempt to
    ``<dir>/attempts/<n>/`` first (sweeps do this in kit.sweep.launchers).
    """
    overrides, multirun = split_args(args)
    refuse_secret_overrides(overrides)
    plain = [o for o in overrides if not o.startswith("hydra")]
    printing = show_only(args)
    try:
        first = compose(config_name, fixed_overrides(overrides), hydra_cfg=True)
        if multirun and not printing:
            check_launcher(first.hydra.launcher)
        if not multirun and not printing:
            run_dir = Path(first.hydra.run.dir)
            done = JobDir(run_dir).read()
            if done is not None and done.is_done:  # the same config is a skip; another one is refused
                refuse_other_config(JobDir(run_dir), done, run_id(resolved(config_name, plain)))
                return run_dir
        sweep = dict(first.hydra.sweeper.params or {}) if multirun else {}
        points = expand(plain, sweep) if multirun else [plain]
        for point in points:
            cfg = compose(config_name, point)
            check_added_keys(cfg, point)
            refuse_secret_values(cfg)
            OmegaConf.resolve(cfg)
            check_inputs(cfg)  # model folder, dataset file, tasks: before any job dir exists
    except KitError:
        raise
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise KitError(one_line(e)) from None
    # One writer per dir: taken here, before Hydra writes into it, when the dir exists already
    # (a fresh timestamped dir is locked by the job / the launcher as soon as it exists).
    target = Path(str(first.hydra.sweep.dir if multirun else first.hydra.run.dir))
    if target.is_dir() and not printing:
        hold(target, "sweep dir" if multirun else "job dir")
    moved = None if multirun or printing else JobDir(run_dir).set_aside()
    if moved:
        log.info("unfinished attempt in %s moved to %s; running it again", run_dir, moved)
    return None


def resolved(config_name: str, overrides: list[str]):
    cfg = compose(config_name, overrides)
    OmegaConf.resolve(cfg)
    return cfg


def check_launcher(launcher_cfg) -> None:
    """What the launcher needs here (a SLURM cluster that answers), before Hydra makes the sweep dir."""
    entry = entry_for(launcher_cfg)
    if entry is not None and entry.check is not None:
        entry.check()


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """``+a.b=v`` / ``++a.b.c=v`` add keys past the structured schema (Hydra opens it for them);
    refuse a key that some schema on its path does not know (a typo such as ``+lora.rnk=8``, or
    ``+lora.x.y=1``, where Hydra makes ``x`` a new free-form mapping): every part of the key is
    checked against its parent's schema, down to the first free-form mapping (``phase.modifiers``)."""
    for line in overrides:
        if not line.startswith("+"):
            continue
        key = line.lstrip("+").partition("=")[0]
        if "@" in key or (conf_dir() / key.replace(".", "/")).is_dir():  # a config group (+experiment=...)
            continue
        unknown = first_unknown_part(cfg, key.split("."))
        if unknown is not None:
            parent, part, known = unknown
            raise KitError(
                f"unknown key {key!r} in {line!r}: {parent or 'the config'} has no key {part!r}; expected one of {known}"
            )


def first_unknown_part(cfg: DictConfig, parts: list[str]) -> tuple[str, str, list[str]] | None:
    """(parent key, part, the parent's known keys) for the first part of a key its parent's schema
    lacks; None when every schema on the way knows its part."""
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None
        schema = OmegaConf.get_type(node)
        if schema is not None and dataclasses.is_dataclass(schema):
            known = [f.name for f in dataclasses.fields(schema)]
            if part not in known:
                return ".".join(parts[:i]), part, known
        # a free-form mapping (e.g. phase.modifiers) takes any key; its values may have a schema again
        node = node._get_node(part) if part in node else None
    return None
