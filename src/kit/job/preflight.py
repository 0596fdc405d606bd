"""Every input of one job checked before any work: the config's values, the base, each phase's needs.

Called for every sweep point before Hydra runs any job (kit.sweep.preflight), and by ``run_job``
for a config composed through the API."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.errors import KitError
from kit.core.log import get as get_logger
from kit.core.model.resolve import resolve_base
from kit.job.phases import pipeline

log = get_logger(__name__)


# Values the schema types but cannot bound: (lowest, highest, lowest allowed itself?). None: unbounded.
# Checked for every sweep point, so ``-m lora.rank=8,-1`` fails before job 0 trains.
RANGES = {
    "lora.rank": (1, None, True),
    "lora.alpha": (0, None, False),
    "lora.dropout": (0, 1, True),
    "trainer.epochs": (1, None, True),
    "trainer.max_steps_per_epoch": (1, None, True),
    "trainer.batch_size": (1, None, True),
    "trainer.gradient_accumulation_steps": (1, None, True),
    "trainer.lr": (0, None, False),
    "trainer.weight_decay": (0, None, True),
    "trainer.warmup_steps": (0, None, True),
    "trainer.clip_grad_norm": (0, None, False),
    "trainer.nproc_per_node": (1, None, True),
    "eval.batch_size": (1, None, True),
    "eval.max_tokens": (1, None, True),
    "eval.temperature": (0, None, True),
    "eval.max_adapters": (1, None, True),
    "tasks.limit": (1, None, True),
    "verify.probes": (1, None, True),
    "verify.max_new_tokens": (1, None, True),
    "verify.limit": (1, None, True),
    "verify.rounds": (1, None, True),
    "verify.rounding_factor": (1, None, True),
}


# A modifier's own rank and budget (None: the job's) have the bounds of the keys they stand in for
MODIFIER_RANGES = {"rank": RANGES["lora.rank"], "epochs": RANGES["trainer.epochs"], "lr": RANGES["trainer.lr"]}


def range_error(key: str, value, low, high, low_ok: bool) -> KitError | None:
    """The one-line error for ``key=value`` outside (low, high), else None (None: "not set", passes)."""
    if value is None:
        return None
    too_low = value < low or (value == low and not low_ok)
    if not too_low and (high is None or value < high):
        return None
    lower = f">= {low}" if low_ok else f"> {low}"
    expected = lower if high is None else f"{lower} and < {high}"
    return KitError(f"{key}={value} is out of range; expected a number {expected}")


def check_ranges(cfg: DictConfig) -> None:
    """One line for the first value out of range (a None means "not set" and passes)."""
    checks = [(key, OmegaConf.select(cfg, key), bounds) for key, bounds in RANGES.items()]
    for name, spec in (cfg.phase.modifiers or {}).items():
        checks += [(f"phase.modifiers.{name}.{key}", spec[key], bounds) for key, bounds in MODIFIER_RANGES.items()]
    for key, value, bounds in checks:
        if (error := range_error(key, value, *bounds)) is not None:
            raise error


def check_inputs(cfg: DictConfig) -> Path:
    """Check every input of a job before any work (one clear error, nothing written); returns its base.

    The config's own values first (nothing missing, every number in range), then the base model,
    then each phase of ``phase.pipeline`` checks what it needs (kit.job.phases)."""
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise KitError(f"missing required config value(s) {sorted(missing)}; set them on the command line")
    check_ranges(cfg)
    phases = pipeline(cfg)
    base = resolve_base(cfg.model)
    for phase in phases:
        phase.check(cfg, base)
    return base
