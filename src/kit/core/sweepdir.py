"""A sweep dir on disk (``hydra.sweep.dir``): the names in it beside the job dirs ``<n>/``.

``manifest.json``: what a submitit launcher submitted (each point's run id, job dir, SLURM ids
and log files), so ``kit status`` / ``kit collect`` need no live submitter.
``launch.json``: how each job of the last launch ended as its launcher saw it (a job can fail
before it writes a summary: killed, out of memory); the sweep report reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kit.core.errors import KitError

MANIFEST = "manifest.json"
LAUNCH = "launch.json"
MULTIRUN = "multirun.yaml"  # Hydra's record of the sweep command
REPORT = ("sweep_summary.json", "sweep_summary.md", "sweep_summary.png", "sweep_report.html")


def read_manifest(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise KitError(
            f"{str(path)!r} not found; expected the sweep dir of a kit multirun on submitit "
            "(hydra/launcher=submitit_slurm or local_slurm)"
        )
    return json.loads(path.read_text())


def write_json(sweep_dir: Path, name: str, data: dict) -> None:
    """Atomic (per-process temp file, then rename): a reader never sees half a file."""
    tmp = Path(sweep_dir) / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(Path(sweep_dir) / name)


def write_manifest(sweep_dir: Path, manifest: dict) -> None:
    write_json(sweep_dir, MANIFEST, manifest)


def read_launch(sweep_dir: Path) -> dict[int, dict]:
    """{job number: {"status", "error"}} of the last launch (empty when there is none)."""
    try:
        return {int(k): v for k, v in json.loads((Path(sweep_dir) / LAUNCH).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_launch(sweep_dir: Path, outcomes: dict[int, dict]) -> None:
    write_json(sweep_dir, LAUNCH, {str(k): v for k, v in sorted(outcomes.items())})
