"""Versions of the pinned stack, recorded in every summary and checked by tests."""

from importlib.metadata import PackageNotFoundError, version

STACK = ("torch", "torchao", "torchtune", "peft", "transformers", "inspect_ai", "hydra-core", "wandb")


def stack_versions() -> dict[str, str | None]:
    out = {}
    for name in STACK:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
