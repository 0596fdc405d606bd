"""Hydra entry points. Kept in an importable module (not __main__) so submitit
can pickle the task function and run it on a worker."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kit.core.config import conf_dir, redact_overrides, redact_yaml_files, register_resolvers
from kit.core.errors import KitError
from kit.stages.job import run_job
from kit.stages.sweep import sweep_group

register_resolvers()


def job_identity() -> tuple[Path, str, str, list[str]]:
    """(job dir, W&B group, run name, overrides) for the running Hydra job."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    overrides = redact_overrides(list(hc.overrides.task))  # as saved and logged: no secrets
    if hc.mode == RunMode.MULTIRUN:
        group = sweep_group(Path(hc.sweep.dir))
        name = ",".join(o for o in overrides if not o.startswith("+experiment")) or f"job{hc.job.num}"
    else:
        group = f"{job_dir.parent.name}-{job_dir.name}"
        name = group
    return job_dir, group, name, overrides


def hide_secrets(job_dir: Path) -> None:
    """Hydra has just written the job's ``.hydra/`` files from the raw command line: rewrite them
    with secrets redacted, and redact ``sys.argv`` (already parsed) before W&B records it."""
    redact_yaml_files(sorted((job_dir / ".hydra").glob("*.yaml")))
    sys.argv[:] = redact_overrides(sys.argv)


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def train_main(cfg: DictConfig) -> dict:

    job_dir, group, name, overrides = job_identity()
    hide_secrets(job_dir)
    try:
        summary = run_job(cfg, job_dir, group, name, overrides)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return {"status": "failed", "job_dir": str(job_dir), "error": str(e)}
        raise SystemExit(2)
    return {"status": summary["status"], "job_dir": str(job_dir)}
