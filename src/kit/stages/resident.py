"""One base model resident in memory; many LoRA adapters attached to it in turn.

Used by ``eval=direct`` (unmerged PEFT), ``eval=merge_in_memory`` (merged into
the resident weights, then restored bit-exactly) and the vLLM stand-in server.
The base is loaded once per process (``resident_for``) and never reloaded when
the adapter changes. At most ``max_adapters`` adapters stay attached; the least
recently used one is deleted, so memory stays flat over any number of switches.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

from kit.core.errors import KitError
from kit.core.loader import load_model, load_tokenizer
from kit.core.snapshot import Snapshot, fingerprint

_residents: dict[tuple, "ResidentBase"] = {}
_residents_lock = threading.Lock()
LOADS = 0  # bases loaded by this process (tests and summaries show the base is loaded once)


def adapter_name(folder: Path) -> str:
    """A PEFT adapter name for a folder: no dots (they are module paths in PEFT)."""
    return "kit_" + hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:12]


def read_adapter(folder: Path, allow_pickle: bool = False) -> tuple[dict, dict]:
    """(adapter_config, {tensor name: shape}) of an adapter folder, or a one-line KitError naming the file."""
    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    if not folder.is_dir():
        raise KitError(f"adapter folder {str(folder)!r} not found; expected a PEFT adapter folder")
    if not config_file.is_file():
        raise KitError(f"{str(config_file)!r} is missing; expected a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        raise KitError(f"{str(config_file)!r} is not valid JSON ({e}); expected PEFT's adapter_config.json") from None
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        pickled = folder / "adapter_model.bin"
        if pickled.is_file() and not allow_pickle:
            raise KitError(f"{str(pickled)!r} is a pickle; kit loads safetensors only (set model.allow_pickle=true to load it)")
        raise KitError(f"{str(weights)!r} is missing; expected adapter weights in safetensors format")
    return config, tensor_shapes(weights)


def tensor_shapes(weights: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            for k in f.keys():  # read every tensor: a truncated file fails here, not mid-eval
                f.get_tensor(k)
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise KitError(f"{str(weights)!r} is unreadable ({why}); expected a complete safetensors file") from None
    return shapes


def check_fits(shapes: dict[str, list[int]], model, weights: Path) -> None:
    """Every lora_A/lora_B tensor names a Linear layer of this base, with matching sizes."""
    for key, shape in shapes.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        module_name, kind = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        try:
            layer = model.get_submodule(module_name)
        except AttributeError:
            raise KitError(f"{str(weights)!r} targets {module_name!r}, which this base does not have; expected an adapter trained on this base") from None
        layer = getattr(layer, "base_layer", layer)
        size = getattr(layer, "in_features" if kind.startswith("A") else "out_features", None)
        got = shape[1] if kind.startswith("A") else shape[0]
        if size is not None and got != size:
            side = "in_features" if kind.startswith("A") else "out_features"
            raise KitError(
                f"{str(weights)!r} does not fit this base: {key} has shape {shape} but {module_name} has "
                f"{side}={size}; expected an adapter trained on this base"
            )


class ResidentBase:
    def __init__(self, base: Path, device: str, dtype: str, trust_remote_code: bool = False, max_adapters: int = 4):

        global LOADS
        LOADS += 1
        self.base = Path(base)
        self.device = device
        import torch

        # never as inference tensors (a first use inside torch.inference_mode would make them so):
        # in-memory merges and restores update these weights in place
        with torch.inference_mode(False):
            self.model = load_model(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        self.tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
        self.base_params = [n for n, _ in self.model.named_parameters()]  # names before PEFT wraps layers
        self.max_adapters = max_adapters
        self.peft = None  # the PeftModel wrapper, made when the first adapter arrives
        self.attached: OrderedDict[str, Path] = OrderedDict()  # least recently used first
        self.merged: str | None = None
        self.snapshots: dict[frozenset, object] = {}  # pristine weights per set of LoRA'd layers
        self.lock = threading.RLock()
        self.adapter_loads = 0

    def fingerprint(self) -> str:
        """sha256 of every base weight, bit-exact (LoRA weights excluded)."""

        return fingerprint(self.model, self.base_params)

    # -- adapters ---------------------------------------------------------

    def attach(self, folder: Path, allow_pickle: bool = False) -> str:
        """Load an adapter onto the resident base (no-op if attached); returns its PEFT name."""
        folder = Path(folder)
        name = adapter_name(folder)
        with self.lock:
            if name in self.attached:
                self.attached.move_to_end(name)
                return name
            _, shapes = read_adapter(folder, allow_pickle)
            check_fits(shapes, self.model, folder / "adapter_model.safetensors")
            self.restore()  # PEFT unmerges by arithmetic when adapters change; keep it exact
            self._load(folder, name)
            self.attached[name] = folder
            self.adapter_loads += 1
            while len(self.attached) > self.max_adapters:
                self.detach(next(iter(self.attached)))
            return name

    def _load(self, folder: Path, name: str) -> None:
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(folder, adapter_name=name, is_trainable=False)
        except Exception as e:
            if self.peft is not None and name in self.peft.peft_config:
                self.peft.delete_adapter(name)  # leave the base as it was
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise KitError(f"adapter {str(folder)!r} could not be loaded onto {str(self.base)!r} ({why})") from None

    def detach(self, name: str) -> None:
        with self.lock:
            self.restore()
            if len(self.peft.peft_config) == 1:  # PEFT needs one adapter left; keep it, unused
                return
            if name in self.peft.active_adapters:  # else PEFT warns "Adapter ... was active which is now deleted"
                self.peft.set_adapter(next(n for n in self.peft.peft_config if n != name))
            self.peft.delete_adapter(name)
            self.attached.pop(name, None)

    # -- which weights compute ---------------------------------------------

    def activate(self, name: str | None, merged: bool = False, check: bool = True) -> None:
        """Make ``name`` the adapter that computes (None: the bare base); call under ``lock``."""
        if merged and name is not None:
            if self.merged != name:
                self.restore(check)
                self.peft.set_adapter(name)
                self._snapshot_for(name)
                self.peft.base_model.merge_adapter(adapter_names=[name])
                self.merged = name
            return
        self.restore(check)
        if name is not None:
            self.peft.set_adapter(name)

    def forward_model(self, name: str | None):
        """The module whose ``generate``/``forward`` computes with the active adapter."""
        if name is None and self.peft is not None:
            return _BaseOnly(self.peft)
        return self.peft if self.peft is not None else self.model

    def _targets(self, name: str) -> list[str]:
        """Names of the base layers the adapter's LoRA layers wrap."""
        from peft.tuners.lora import LoraLayer

        return [f"{n}.base_layer" for n, m in self.model.named_modules()
                if isinstance(m, LoraLayer) and name in m.lora_A]

    def _snapshot_for(self, name: str) -> None:

        targets = frozenset(self._targets(name))
        if targets not in self.snapshots:  # taken while unmerged: the weights are pristine
            snap = Snapshot.take(self.model, sorted(targets))
            self.snapshots[targets] = (snap, fingerprint(self.model, snap.names))
        self._merged_targets = targets

    def restore(self, check: bool = True) -> None:
        """Undo an in-memory merge by copying the pristine weights back (bit-exact)."""
        if self.merged is None:
            return

        from peft.tuners.lora import LoraLayer

        snap, print_before = self.snapshots[self._merged_targets]
        snap.restore(self.model)  # the saved bits, not PEFT's unmerge arithmetic (it drifts in bf16)
        for module in self.model.modules():  # and PEFT's bookkeeping to match: nothing merged
            if isinstance(module, LoraLayer):
                module.merged_adapters.clear()
        if check and fingerprint(self.model, snap.names) != print_before:
            raise KitError(f"base {str(self.base)!r} weights differ from their snapshot after unmerge")
        self.merged = None


class _BaseOnly:
    """``generate`` on the PEFT model with every adapter disabled: the bare base."""

    def __init__(self, peft_model):
        self.peft = peft_model

    def generate(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft.generate(*args, **kwargs)


def resident_for(base: Path, device: str, dtype: str, trust_remote_code: bool = False, max_adapters: int = 4) -> ResidentBase:
    """The process's resident copy of ``base`` (loaded on first use only).

    Only one base stays resident: asking for another releases the previous one.
    """
    key = (str(Path(base).resolve()), device, dtype, trust_remote_code)
    with _residents_lock:
        if key not in _residents:
            _residents.clear()
            _residents[key] = ResidentBase(Path(base), device, dtype, trust_remote_code, max_adapters)
        resident = _residents[key]
        resident.max_adapters = max(resident.max_adapters, max_adapters)
        return resident


def release_all() -> None:
    with _residents_lock:
        _residents.clear()
