"""Where kit's configs live and the resolvers they use."""

from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import OmegaConf

from kit.core.errors import KitError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def conf_dir() -> Path:
    if not (CONF_DIR / "train.yaml").is_file():
        raise KitError(f"kit's config folder {str(CONF_DIR)!r} not found; install kit with `pip install -e .`")
    return CONF_DIR


def register_resolvers() -> None:
    from kit.core.data import bundled
    from kit.core.schema import register

    register()
    # conf/hydra/launcher/{basic,submitit_*}.yaml extend the launcher schemas of the same name;
    # Hydra 1.3 merges them as intended and warns on every compose that this is deprecated.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
    if not OmegaConf.has_resolver("kit.bundled"):
        OmegaConf.register_new_resolver("kit.bundled", lambda name: str(bundled(name)))
        OmegaConf.register_new_resolver("kit.mul", lambda a, b: a * b)
