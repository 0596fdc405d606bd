"""Snapshot/restore of the modules an adapter touches, and a bit-exact fingerprint.

In-memory merge folds an adapter into the base weights; unmerging in bf16 does
not give the same bits back (drift up to ~5e-4 seen on an 8B model). So kit
copies the touched modules' weights before the merge and copies them back
after: restore is exact, and ``fingerprint`` proves it.

Names are the base model's (``model.layers.0.self_attn.q_proj``). After PEFT
wraps a module its weights live under ``<module>.base_layer``; lookups fall back
to that, so a snapshot taken before wrapping restores into the wrapped model too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kit.core.errors import KitError

CHUNK_BYTES = 1 << 30  # one safetensors file per ~1 GiB when snapshotting to disk
INDEX = "snapshot_index.json"


def _own_params(module) -> dict:
    """A module's own parameters (not its children's); a PEFT wrapper's are its base layer's."""
    inner = getattr(module, "base_layer", module)
    return dict(inner.named_parameters(recurse=False))


def param_names(model, module_names: list[str]) -> list[str]:
    """``<module>.<param>`` for the given modules, in the given order."""
    names = []
    for module_name in module_names:
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise KitError(f"module {module_name!r} not found in {type(model).__name__}") from None
        names += [f"{module_name}.{p}" for p in _own_params(module)]
    return names


def get_param(model, name: str):
    """A parameter by its base-model name, also after PEFT wrapped its module."""
    module_name, _, param = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    found = _own_params(module).get(param)
    if found is None:
        raise KitError(f"parameter {name!r} not found in {type(model).__name__}")
    return found


def _bytes(tensor) -> bytes:
    import torch

    # viewed as raw bytes: numpy has no bfloat16
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model, names: list[str] | None = None) -> str:
    """sha256 over name, dtype, shape and exact bytes of each parameter, in sorted
    name order (all parameters when ``names`` is None). Bit-exact: any change shows."""
    if names is None:
        params = dict(model.named_parameters())
    else:
        params = {n: get_param(model, n) for n in names}
    return hash_tensors((name, params[name]) for name in sorted(params))


def hash_tensors(named_tensors) -> str:
    """The one tensor-hash scheme (model fingerprints, base-folder fingerprints): sha256
    over ``name|dtype|shape|`` and the exact bytes of each (name, tensor), in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_bytes(tensor))
    return digest.hexdigest()


class Snapshot:
    """Copies of some modules' weights: in CPU memory, or chunked safetensors on disk."""

    def __init__(self, names: list[str], tensors: dict | None, folder: Path | None, nbytes: int):
        self.names = names
        self._tensors = tensors  # name -> CPU tensor, when in memory
        self.folder = folder  # when on disk
        self.nbytes = nbytes

    @classmethod
    def take(cls, model, module_names: list[str], to_disk: Path | None = None,
             chunk_bytes: int = CHUNK_BYTES) -> "Snapshot":
        names = param_names(model, module_names)
        nbytes = sum(get_param(model, n).nbytes for n in names)
        if to_disk is None:
            tensors = {n: get_param(model, n).detach().to("cpu", copy=True) for n in names}
            return cls(names, tensors, None, nbytes)
        folder = Path(to_disk)
        if folder.exists() and any(folder.iterdir()):
            raise KitError(f"snapshot folder {str(folder)!r} is not empty; expected a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        _write_chunks(model, names, folder, chunk_bytes)
        return cls(names, None, folder, nbytes)

    def restore(self, model) -> None:
        """Copy the saved weights back into the model, bit for bit."""
        import torch

        with torch.no_grad():
            for name, saved in self._saved():
                param = get_param(model, name)
                if param.shape != saved.shape or param.dtype != saved.dtype:
                    raise KitError(
                        f"snapshot of {name!r} is {saved.dtype} {tuple(saved.shape)} but the model has "
                        f"{param.dtype} {tuple(param.shape)}; expected the model the snapshot was taken from"
                    )
                param.copy_(saved)

    def _saved(self):
        if self._tensors is not None:
            yield from self._tensors.items()
            return
        from safetensors import safe_open

        index = json.loads((self.folder / INDEX).read_text())
        for file, names in index.items():  # one chunk in memory at a time
            with safe_open(str(self.folder / file), framework="pt") as f:
                for name in names:
                    yield name, f.get_tensor(name)

    def discard(self) -> None:
        """Free the copies (delete the chunk files when on disk)."""
        self._tensors = None
        if self.folder is not None:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def _write_chunks(model, names: list[str], folder: Path, chunk_bytes: int) -> None:
    from safetensors.torch import save_file

    index: dict[str, list[str]] = {}
    chunk: dict = {}
    size = 0

    def flush():
        nonlocal chunk, size
        if chunk:
            file = f"snapshot-{len(index):05d}.safetensors"
            save_file(chunk, str(folder / file))
            index[file] = list(chunk)
            chunk, size = {}, 0

    for name in names:
        tensor = get_param(model, name).detach().to("cpu", copy=True).contiguous()
        if size and size + tensor.nbytes > chunk_bytes:
            flush()
        chunk[name] = tensor
        size += tensor.nbytes
    flush()
    (folder / INDEX).write_text(json.dumps(index, indent=1))


def _adapter_config(adapter_config):
    """A PEFT config from a config object, a dict, or an adapter folder/file."""
    from peft import LoraConfig, PeftConfig

    if isinstance(adapter_config, PeftConfig):
        return adapter_config
    if isinstance(adapter_config, (str, Path)):
        path = Path(adapter_config)
        path = path / "adapter_config.json" if path.is_dir() else path
        if not path.is_file():
            raise KitError(f"adapter config {str(path)!r} not found; expected an adapter folder with adapter_config.json")
        adapter_config = json.loads(path.read_text())
    fields = LoraConfig.__dataclass_fields__
    return LoraConfig(**{k: v for k, v in dict(adapter_config).items() if k in fields and k != "peft_type"})


def adapter_target_modules(model, adapter_config) -> list[str]:
    """Names of the model's modules a LoRA adapter config targets, matched by PEFT's
    own rule (exact name or ``.``-suffix for a list, full regex match for a string,
    ``all-linear``, ``layers_to_transform``, ``exclude_modules``)."""
    from peft.tuners.tuners_utils import (
        _maybe_include_all_linear_layers,
        check_target_module_exists,
    )

    config = _maybe_include_all_linear_layers(_adapter_config(adapter_config), model)
    hits = []
    for name, module in model.named_modules():
        if name and _own_params(module) and check_target_module_exists(config, name):
            hits.append(name)
    return hits
