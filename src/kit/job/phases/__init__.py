"""The phases a job can run, one module each; a job's list is ``phase.pipeline`` (config group ``phase``).

The registry is every module here that defines ``PHASE`` (a ``kit.job.phase.Phase``): a new phase is
its module, its ``conf/phase/<name>.yaml`` listing it, and that option's value in
``kit.core.schema.Phase``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from kit.core.errors import KitError
from kit.core.registry import discover
from kit.job.phase import Phase

PHASES: dict[str, Phase] = discover(__name__, __path__, "PHASE", Phase)


def pipeline(cfg: DictConfig) -> list[Phase]:
    """The phases ``phase.pipeline`` names, in order; a one-line KitError for an unknown or empty list."""
    names = [str(n) for n in cfg.phase.pipeline]
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        raise KitError(f"phase.pipeline names unknown phase(s) {unknown}; expected some of {sorted(PHASES)}")
    if not names:
        served = " (it is served: python -m kit serve serve.registry=<modifier job dir>)" if cfg.phase.name == "runtime" else ""
        raise KitError(f"phase={cfg.phase.name} runs no phases (phase.pipeline is empty){served}; nothing to train")
    return [PHASES[n] for n in names]
