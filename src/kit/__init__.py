"""kit: LoRA fine-tuning with torchtune, evaluation with Inspect AI, sweeps with Hydra/SLURM, W&B logging.

The public API is what ``__all__`` names; everything else may change between releases. Names are
imported on first use (PEP 562), so ``import kit`` stays cheap for the CLI.

Layers (CONTRIBUTING.md): ``kit.core`` (job dirs, configs, devices, models) < ``kit.stages`` (train,
export, evaluate, verify, phases, serve) < ``kit.commands`` (one module per CLI command).
"""

from __future__ import annotations

import importlib

from kit.core.log import quiet_known_noise

# Before any kit module imports torchtune/torchao: their known-harmless import-time log lines.
quiet_known_noise()

_API = {
    "KitError": "kit.core.errors",
    "compose": "kit.core.config",  # a kit config from overrides, as `python -m kit train` composes it
    "load_model": "kit.core.model.loader",
    "load_tokenizer": "kit.core.model.loader",
    "fingerprint": "kit.core.model.snapshot",
    "read_summary": "kit.core.jobdir",
    "find_jobs": "kit.core.jobdir",
    "run_job": "kit.job.pipeline",  # train -> export -> evaluate -> verify for one composed config
    "evaluate": "kit.eval.evaluate",
    "verify_checkpoint": "kit.verify",
    "STRATEGIES": "kit.eval.strategies",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
