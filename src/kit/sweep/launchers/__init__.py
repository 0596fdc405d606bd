"""kit's launchers (config group ``hydra/launcher``): ``basic``, ``submitit_local``, ``submitit_slurm``.

They are Hydra's own launchers with what a sweep needs (kit.sweep.launchers.common): resume, every
failure returned rather than raised, no hang on hard crashes, a sweep manifest, requeue. The registry
is every module here that defines ``LAUNCHER``; ``register_configs`` stores their dataclasses in
Hydra's ConfigStore under the option names (replacing the submitit plugin's and Hydra's own nodes of
the same names, so ``hydra/launcher=submitit_slurm`` means kit's). Site profiles extend them from a
user config folder on Hydra's search path (``$KIT_CONFIG_DIR``, default ``~/.config/kit``:
``hydra/launcher/<site>.yaml`` with ``defaults: [submitit_slurm, _self_]``).
"""

from __future__ import annotations

from kit.core.registry import discover
from kit.sweep.launcher import LauncherEntry

LAUNCHERS: dict[str, LauncherEntry] = discover(__name__, __path__, "LAUNCHER", LauncherEntry)


def register_configs() -> None:
    """kit's launcher dataclasses into Hydra's ConfigStore, each under its option name, replacing the
    nodes Hydra and the submitit plugin store under those names (called by kit's search-path plugin,
    hydra_plugins/kit_launcher/searchpath.py, after Hydra's plugin scan has stored theirs)."""
    from hydra.core.config_store import ConfigStore

    for entry in LAUNCHERS.values():
        ConfigStore.instance().store(group="hydra/launcher", name=entry.name, node=entry.conf, provider="kit")


def entry_for(launcher_cfg) -> LauncherEntry | None:
    """The registry entry of a composed ``hydra.launcher`` (a site profile counts as what it extends)."""
    target = str(launcher_cfg.get("_target_", ""))
    return next((e for e in LAUNCHERS.values() if e.target == target), None)
