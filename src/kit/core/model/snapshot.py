"""Snapshot/restore of the modules an adapter touches, and a bit-exact fingerprint.

In-memory merge folds an adapter into the base weights; unmerging in bf16 does
not give the same bits back (drift up to ~5e-4 seen on an 8B model). So kit
copies the touched modules' weights before the merge and copies them back
after: restore is exact. The copy stays on the model's own device when it has
room (a device-to-device copy back, no host round trip), else in CPU memory
(``Snapshot.where`` / ``Snapshot.why`` say which and why). After each restore
``Snapshot.verify`` compares cheap on-device checksums (integer sums of the raw
bits as 64-bit words: one ulp anywhere changes them); the full sha256 ``fingerprint`` is for
``kit verify`` and tests.

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
DEVICE_HEADROOM = 0.10  # keep a device snapshot only if 10% of the device (and 1 GiB) stays free after it


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


def _word_sum(tensor):
    """Sum of the tensor's raw bytes read as 64-bit integers (wrapping), where it lives.
    Native-width integer sums are vectorized (reading fp32 as int32 and summing into int64
    was 25x slower on CPU, slower than sha256); 4-byte words or single bytes when the size
    does not divide."""
    import torch

    raw = tensor.detach().reshape(-1).view(torch.uint8)
    for width, dtype in ((8, torch.int64), (4, torch.int32)):
        if raw.numel() % width == 0:
            try:
                return raw.view(dtype).sum(dtype=dtype).to(torch.int64)
            except RuntimeError:  # a storage offset that does not align: try narrower words
                continue
    return raw.sum(dtype=torch.int64)


def checksums(tensors) -> list[int]:
    """Per tensor, the wrapping integer sum of its raw bits, computed where the tensor
    lives (one host sync for all). Integer sums are exact and order-free, so the same
    bits always give the same sums; a one-ulp change in any element changes one word,
    so the sum. Not a cryptographic hash: ``fingerprint`` is kit verify's."""
    import torch

    sums = [_word_sum(t) for t in tensors]
    if not sums:
        return []
    devices = {s.device for s in sums}
    return torch.stack([s.to("cpu") for s in sums] if len(devices) > 1 else sums).tolist()


def device_has_room(device, nbytes: int) -> tuple[bool, str]:
    """Whether ``nbytes`` more fit on a CUDA device with headroom left; and why (one line)."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    keep = max(int(total * DEVICE_HEADROOM), 1 << 30)
    if free - nbytes >= keep:
        return True, f"{nbytes / 2**30:.2f} GiB snapshot kept on {device} ({free / 2**30:.1f} GiB free)"
    return False, (
        f"{nbytes / 2**30:.2f} GiB snapshot kept in CPU memory: {device} has {free / 2**30:.1f} GiB free "
        f"and keeps {keep / 2**30:.1f} GiB headroom; restores copy host-to-device"
    )


class Snapshot:
    """Copies of some modules' weights: on the model's device, in CPU memory, or chunked
    safetensors on disk; with the checksums of the pristine weights."""

    def __init__(
        self,
        names: list[str],
        tensors: dict | None,
        folder: Path | None,
        nbytes: int,
        sums: list[int] | None = None,
        where: str = "cpu",
        why: str = "",
    ):
        self.names = names
        self._tensors = tensors  # name -> tensor, when in memory
        self.folder = folder  # when on disk
        self.nbytes = nbytes
        self.sums = sums  # checksums() of the pristine weights, in ``names`` order
        self.where, self.why = where, why  # "device" | "cpu" | "disk", and one line saying why

    @classmethod
    def take(
        cls, model, module_names: list[str], to_disk: Path | None = None, chunk_bytes: int = CHUNK_BYTES, on_device: bool = True
    ) -> Snapshot:
        """Copy the modules' weights; in memory on their own device when ``on_device``
        and it has room (CPU weights: CPU memory), else in CPU memory; or to ``to_disk``."""
        names = param_names(model, module_names)
        params = [get_param(model, n) for n in names]
        nbytes = sum(p.nbytes for p in params)
        sums = checksums(params)
        if to_disk is None:
            where, why = _memory_place(params, nbytes, on_device)
            target = params[0].device if where == "device" and params else "cpu"
            tensors = {n: p.detach().to(target, copy=True) for n, p in zip(names, params)}
            return cls(names, tensors, None, nbytes, sums, where, why)
        folder = Path(to_disk)
        if folder.exists() and any(folder.iterdir()):
            raise KitError(f"snapshot folder {str(folder)!r} is not empty; expected a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        _write_chunks(model, names, folder, chunk_bytes)
        return cls(names, None, folder, nbytes, sums, "disk", f"{nbytes / 2**30:.2f} GiB snapshot on disk at {folder}")

    def verify(self, model) -> list[str]:
        """Names of the weights whose checksum differs from the pristine one (empty: all equal)."""
        now = checksums([get_param(model, n) for n in self.names])
        return [n for n, a, b in zip(self.names, now, self.sums or []) if a != b]

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
                param.copy_(saved)  # same device: a device-to-device copy, no host round trip

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


def _memory_place(params, nbytes: int, on_device: bool) -> tuple[str, str]:
    """("device" | "cpu", why) for an in-memory snapshot of ``params``."""
    device = params[0].device if params else None
    if device is None or device.type == "cpu":
        return ("device" if device is not None else "cpu"), "weights are in CPU memory; so is the snapshot"
    if not on_device:
        return "cpu", "snapshot in CPU memory as asked (on_device=False)"
    if device.type != "cuda":
        return "cpu", f"snapshot in CPU memory: free memory on {device.type} cannot be checked"
    fits, why = device_has_room(device, nbytes)
    return ("device" if fits else "cpu"), why


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
