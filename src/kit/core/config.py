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
        raise KitError(
            f"kit's config folder {str(CONF_DIR)!r} not found; "
            "expected kit's configs inside the installed package (reinstall kit)"
        )
    return CONF_DIR


def register_resolvers() -> None:

    register()
    if not OmegaConf.has_resolver("kit.bundled"):
        OmegaConf.register_new_resolver("kit.bundled", lambda name: str(bundled(name)))
        OmegaConf.register_new_resolver("kit.mul", lambda a, b: a * b)


def plain_config(cfg: DictConfig) -> dict:
    """The resolved config as plain values, secrets redacted: what is written or logged."""
    return redact(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def compose(config_name: str, overrides: list[str], hydra_cfg: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    # quiet_warnings: the stack's known-harmless warnings (kit.core.log), while composing only
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


# ---------------------------------------------------------------- secrets

SECRET_KEYS = ("serve.api_key",)
SECRET_NAMES = ("api_key", "token", "password", "secret")  # any key named so, in any config group
REDACTED = "REDACTED"  # a valid Hydra override value: saved overrides still parse


def is_secret(key: str) -> bool:
    key = key.lstrip("+~")
    return key in SECRET_KEYS or key.rsplit(".", 1)[-1] in SECRET_NAMES


def redact_override(override: str) -> str:
    """``serve.api_key=S`` -> ``serve.api_key=REDACTED``; any other override unchanged."""
    key, eq, value = override.partition("=")
    return f"{key}={REDACTED}" if eq and value and value != "null" and is_secret(key.strip()) else override


def redact_overrides(overrides: list[str]) -> list[str]:
    return [redact_override(o) for o in overrides]


def redact(value, path: str = ""):
    """A copy of a plain config (dicts, lists, strings) with every secret replaced by ``REDACTED``:
    secret keys, and secret overrides inside strings (Hydra's override lists and ``override_dirname``).
    Every writer of a config or of overrides (summary.json, .hydra/, W&B) passes through here."""
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret(f"{path}{k}") and v not in (None, "") else redact(v, f"{path}{k}.") for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v, path) for v in value]
    if isinstance(value, str) and "=" in value:
        return ",".join(redact_override(part) for part in value.split(","))
    return value


def redact_yaml_files(paths: list[Path]) -> None:
    """Rewrite YAML files (Hydra's ``.hydra/*.yaml``, ``multirun.yaml``) with secrets redacted,
    atomically, and only those that hold one."""
    for path in paths:
        if not path.is_file():
            continue
        plain = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        clean = redact(plain)
        if clean != plain:
            tmp = path.with_name(f".{path.name}.tmp")
            OmegaConf.save(OmegaConf.create(clean), tmp)
            tmp.replace(path)
