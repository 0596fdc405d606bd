"""Resolve the base model folder: the tiny default, a local folder, or an HF id
found in the local cache. Nothing is fetched unless the user allows the network."""

from __future__ import annotations

import os
from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.gguf import gguf_model_dir
from kit.core.model.smollm2 import PRESETS, package_dir
from kit.core.model.tiny import tiny_model_dir


def network_allowed(model_cfg) -> bool:
    return bool(model_cfg.allow_network) or os.environ.get("KIT_ALLOW_NETWORK") == "1"


def resolve_base(model_cfg, config_only: bool = False) -> Path:
    """The model folder. ``config_only``: a hub model needs only its config.json
    (cached, or fetched alone when the network is allowed), e.g. for describe."""
    if model_cfg.get("gguf_file"):
        return gguf_model_dir(_gguf_folder(model_cfg), model_cfg.gguf_file)
    if model_cfg.path:
        path = Path(model_cfg.path).expanduser()
        if not path.exists():
            raise KitError(f"model.path {str(path)!r} does not exist; expected a local Hugging Face model folder")
        if not (path / "config.json").is_file():
            raise KitError(
                f"model.path {str(path)!r} is not a model folder (no config.json); expected a local Hugging Face model folder"
            )
        return path.resolve()
    if model_cfg.hf_id:
        return _from_hub(model_cfg, ["config.json"] if config_only else None)
    if model_cfg.name == "tiny":
        return tiny_model_dir()
    raise KitError(f"model {model_cfg.name!r} has neither path nor hf_id; set model.path=<HF folder>")


def _gguf_folder(model_cfg) -> Path:
    """The folder holding ``model.gguf_file``: ``model.path``, or the installed package of a preset."""
    if model_cfg.path:
        return Path(model_cfg.path).expanduser()

    if model_cfg.name in PRESETS:
        return package_dir(model_cfg.name)
    raise KitError(
        f"model.gguf_file {model_cfg.gguf_file!r} set without model.path; expected model.path=<folder holding the .gguf file>"
    )


def _from_hub(model_cfg, allow_patterns=None) -> Path:
    from huggingface_hub import snapshot_download

    allow = network_allowed(model_cfg)
    revision, cache_dir = model_cfg.get("revision"), model_cfg.get("cache_dir")
    try:
        return Path(
            snapshot_download(
                model_cfg.hf_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns, local_files_only=not allow
            )
        )
    except Exception as e:
        raise hub_error(e, model_cfg, allow) from None


def hub_error(e: Exception, model_cfg, allow: bool) -> KitError:
    """What went wrong looking up ``model.hf_id``, in one line: only a model missing from the cache
    with the network off is told to turn the network on."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hf_id, revision, cache_dir = model_cfg.hf_id, model_cfg.get("revision"), model_cfg.get("cache_dir")
    where = f" in cache_dir {cache_dir!r}" if cache_dir else ""
    at = f" --revision {revision}" if revision else ""
    fetch = f"download it once with `huggingface-cli download {hf_id}{at} --local-dir DIR` and pass model.path=DIR"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, HFValidationError):
        return KitError(f"model.hf_id {hf_id!r} is not a Hugging Face repo id ({first}); expected 'org/name'")
    if isinstance(e, LocalEntryNotFoundError) and not allow:
        return KitError(
            f"model {hf_id!r} not found locally{where}; {fetch}, or set KIT_ALLOW_NETWORK=1 (or model.allow_network=true)"
        )
    if isinstance(e, LocalEntryNotFoundError):  # the network is allowed but the Hub did not answer
        return KitError(f"model {hf_id!r} is not in the local cache{where} and the Hub could not be reached; {fetch}")
    if isinstance(e, GatedRepoError):
        return KitError(f"model {hf_id!r} is gated on the Hub; expected access granted and $HF_TOKEN set, or {fetch}")
    if isinstance(e, RepositoryNotFoundError):
        return KitError(
            f"model {hf_id!r} does not exist on the Hub (or is private); expected a repo id such as 'Qwen/Qwen2.5-0.5B'"
        )
    if isinstance(e, RevisionNotFoundError):
        return KitError(f"model {hf_id!r} has no revision {revision!r}; expected a branch, tag or commit of that repo")
    if isinstance(e, OSError) and getattr(e, "strerror", None):  # the cache itself: permissions, a full disk
        return KitError(
            f"model {hf_id!r}: reading the Hugging Face cache{where} failed ({e.strerror}); expected a readable cache"
        )
    return KitError(f"model {hf_id!r} could not be looked up{where} ({type(e).__name__}: {first})")
