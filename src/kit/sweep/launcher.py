"""What a launcher is, as the registry in ``kit.sweep.launchers`` lists it.

Each launcher module defines ``LAUNCHER = LauncherEntry(...)``: its option name
(``hydra/launcher=<name>``), its config dataclass (extending the submitit plugin's
``SlurmQueueConf`` / ``LocalQueueConf``, or Hydra's basic one; stored in Hydra's ConfigStore under
that name), what it needs installed, what it checks before a sweep dir exists, and how
``kit status`` reads its jobs. The class Hydra instantiates lives in ``hydra_plugins.kit_launcher``
(Hydra loads launcher classes from there). A new launcher is its module (dataclass + class + entry)
and one subclass line there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from kit.core.versions import installed


@dataclass(frozen=True)
class LauncherEntry:
    name: str  # hydra/launcher=<name>
    conf: type  # the config dataclass (its _target_ names the class in hydra_plugins.kit_launcher)
    what: str
    needs: tuple[str, ...] = ()  # modules it imports
    executables: tuple[str, ...] = ()  # programs it runs (sbatch)
    check: Callable[[], None] | None = None  # before the sweep dir is made: a KitError when it cannot launch here
    tracks: str = "summaries"  # how `kit status` follows its jobs: "slurm" (scontrol/sacct) or "summaries"
    detachable: bool = False  # launcher.detach=true: submit and exit

    @property
    def target(self) -> str:
        return self.conf._target_

    def missing(self) -> list[str]:
        out = [f"{m.split('.')[0]} not installed" for m in self.needs if not installed(m)]
        return out + [f"no {e} on PATH" for e in self.executables if shutil.which(e) is None]
