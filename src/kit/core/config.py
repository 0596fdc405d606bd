"""kit's configs: where they live (``kit/conf``, shipped inside the package), the resolvers
they use, composing them, and turning Hydra/OmegaConf errors into one line."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.data import bundled
from kit.core.errors import KitError
from kit.core.log import quiet_warnings
from kit.core.schema import register

# Inside the package, so a wheel install finds it; the repository's top-level conf/ links here.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def conf_dir() -> Path:
    if not (CONF_DIR / "train.yaml").is_file():
        raise KitError(f"kit's config folder {str(CONF_DIR)!r} not found; expected kit's configs inside the installed package (reinstall kit)")
    return CONF_DIR


def register_resolvers() -> None:

    register()
    if not OmegaConf.has_resolver("kit.bundled"):
        OmegaConf.register_new_resolver("kit.bundled", lambda name: str(bundled(name)))
        OmegaConf.register_new_resolver("kit.mul", lambda a, b: a * b)


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def compose(config_name: str, overrides: list[str], hydra_cfg: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    # quiet_warnings: Hydra's deprecation warning for kit's launcher yamls (kit.core.log), here only
    with quiet_warnings(), initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
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
