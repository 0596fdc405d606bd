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

# A key is secret when any part of its name matches one of these (case-insensitive), unless the
# part is a count, a tokenizer or where a secret is kept (``max_tokens``, ``api_key_file``). One
# list for every reader: the refusal below, redaction, and the run id (kit.core.identity).
SECRET_PATTERNS = ("*api_key*", "*apikey*", "*token*", "*secret*", "*password*", "*passwd*", "*credential*")
NOT_SECRET_PATTERNS = ("*tokens", "*tokens_*", "*tokenizer*", "*_file", "*_path", "*_dir")
REDACTED = "REDACTED"  # a valid Hydra override value: saved overrides still parse
# where a secret is read from instead of the command line, per key; the rest: the tool's own variable
SECRET_SOURCES = {"serve.api_key": "$KIT_API_KEY or serve.api_key_file=<file>"}
ANY_SECRET_SOURCE = "the environment variable the tool reads (e.g. WANDB_API_KEY, HF_TOKEN) or a key file"


def secret_name(name: str) -> bool:
    """One part of a key (``api_key``, ``hf_token``, ``WANDB_API_KEY``) names a secret."""
    from fnmatch import fnmatchcase

    name = str(name).lower()
    if any(fnmatchcase(name, p) for p in NOT_SECRET_PATTERNS):
        return False
    return any(fnmatchcase(name, p) for p in SECRET_PATTERNS)


def is_secret(key: str) -> bool:
    """A dotted key (``serve.api_key``, ``+logger.wandb_api_key``, ``hydra.job.env_set.HF_TOKEN``)
    with any part that names a secret."""
    return any(secret_name(part) for part in key.lstrip("+~").replace("/", ".").split("."))


def has_value(value: str) -> bool:
    return value.strip().strip("'\"") not in ("", "null", "None")


def refuse_secret_overrides(args: list[str]) -> None:
    """A secret on the command line is readable by every user of the machine (``/proc/<pid>/cmdline``)
    and would be copied into every file made from the overrides (Hydra's ``.hydra/``, submitit's
    pickles, the sweep manifest, summaries, W&B): refused in one line, never echoed."""
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and not key.startswith("-") and is_secret(key.strip()) and has_value(value):
            name = key.strip().lstrip("+~")
            raise KitError(
                f"{name}=... on the command line: a secret there is readable by every user of this machine "
                f"(/proc/<pid>/cmdline) and would be copied into the job's files; expected "
                f"{SECRET_SOURCES.get(name, ANY_SECRET_SOURCE)}"
            )


def secret_keys(value, path: str = "") -> list[str]:
    """Keys of a plain config that name a secret and hold a value (a config file is no place for one)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = f"{path}{k}"
            if secret_name(k) and is_literal(v):
                found.append(key)
            else:
                found += secret_keys(v, f"{key}.")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += secret_keys(v, f"{path}{i}.")
    return found


def is_literal(value) -> bool:
    """A value written out as it is: not empty, not a container, not an interpolation such as
    ``${oc.env:WANDB_API_KEY}`` (which points at the environment and is kept unresolved on disk)."""
    if value in (None, "", REDACTED) or isinstance(value, (dict, list)):
        return False
    return not (isinstance(value, str) and value.startswith("${"))


def refuse_secret_values(cfg: DictConfig) -> None:
    """A composed config whose files set a secret-named key (``serve.api_key: ...`` in an experiment
    yaml): refused like the command line, since Hydra writes the composed config to disk."""
    keys = secret_keys(OmegaConf.to_container(cfg, resolve=False))
    if keys:
        raise KitError(
            f"config key {keys[0]} holds a value that looks like a secret; a secret in a config is written to "
            f"every job dir and log; expected {SECRET_SOURCES.get(keys[0], ANY_SECRET_SOURCE)}"
        )


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
