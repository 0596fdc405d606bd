"""One base model resident in memory; many LoRA adapters attached to it in turn.

Used by ``eval=direct`` (unmerged), ``eval=merge_in_memory`` (merged into the resident
weights, then restored bit-exactly), ``kit serve``, ``kit verify`` and the vLLM stand-in
server. PEFT loads every adapter; plain LoRA adapters (no DoRA, LoRA bias or other
variant) then compute through kit's fused path (kit.lora.fused: one shrink GEMM per group
of projections sharing an input, the expand added in place, a LoRA slot per batch row),
merge in place with one ``addmm_`` per layer, and generate through kit's decode loop
(kit.lora.decode; a decode step recorded once as a CUDA graph on a GPU). Other adapters
use PEFT's own forward, merge and HF ``generate``.
Whoever loads a base owns it: a command's ``EvalSession``
(kit.eval.session) keeps one per process run and closes it; the server
and verify hold theirs. It is never reloaded when the adapter changes. At most
``max_adapters`` adapters stay attached; the least recently used one is evicted,
so memory stays flat over any number of switches. An adapter with the same
LoRA shapes and settings as the evicted one takes over its LoRA modules (its
weights are copied into them) instead of PEFT building new ones.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.loader import load_model, load_tokenizer
from kit.core.model.snapshot import Snapshot, fingerprint

# adapter_config.json keys that decide the LoRA modules PEFT builds and how they compute;
# two adapters equal on these (and on their tensor shapes) can share the modules
# per-adapter stores on a PEFT LoRA layer beyond the ones its delete_adapter walks (peft 0.18)
LORA_LAYER_STORES = ("use_dora", "use_rslora", "lora_bias", "lora_magnitude_vector", "lora_variant", "_caches")
REUSE_KEYS = (
    "r",
    "lora_alpha",
    "use_rslora",
    "use_dora",
    "rank_pattern",
    "alpha_pattern",
    "lora_bias",
    "fan_in_fan_out",
    "bias",
    "modules_to_save",
    "lora_dropout",
    "layer_replication",
    "target_parameters",
)


class AdapterBusy(Exception):
    """No adapter can be evicted for a new one: every attached one is in use (``keep``)."""


def adapter_name(folder: Path) -> str:
    """A PEFT adapter name for a folder: no dots (they are module paths in PEFT)."""
    return "kit_" + hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:12]


def read_adapter(folder: Path, allow_pickle: bool = False, read_all: bool = True) -> tuple[dict, dict]:
    """(adapter_config, {tensor name: shape}) of an adapter folder, or a one-line KitError naming the file."""
    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    if not folder.is_dir():
        raise KitError(f"adapter folder {str(folder)!r} not found; expected a PEFT adapter folder")
    if not config_file.is_file():
        raise KitError(
            f"{str(config_file)!r} is missing; expected a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"
        )
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
    return config, tensor_shapes(weights, read_all)


def _unreadable(weights: Path, e: Exception) -> KitError:
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    return KitError(f"{str(weights)!r} is unreadable ({why}); expected a complete safetensors file")


def tensor_shapes(weights: Path, read_all: bool = True) -> dict[str, list[int]]:
    """{name: shape} from the header; ``read_all`` also reads every tensor, so a
    truncated file fails here, not mid-eval (callers that read them anyway skip it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            for k in f.keys() if read_all else ():
                f.get_tensor(k)
    except Exception as e:
        raise _unreadable(weights, e) from None
    return shapes


def read_tensors(weights: Path, device) -> dict:
    """Every tensor of a safetensors file, read straight onto ``device``; one-line error if broken."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise _unreadable(weights, e) from None


def signature(config: dict, shapes: dict) -> str:
    """Adapters with equal signatures get LoRA modules of the same shapes and settings from
    PEFT, so one can take over the other's modules. Plain LoRA (lora_A/lora_B) only."""
    plain = all(".lora_A." in k or ".lora_B." in k for k in shapes)
    settings = {k: config.get(k) for k in REUSE_KEYS}
    return json.dumps({"plain": plain, "settings": settings, "shapes": sorted(shapes.items())}, sort_keys=True)


def is_plain_lora(sig: str | None) -> bool:
    return sig is not None and json.loads(sig)["plain"] and not json.loads(sig)["settings"].get("use_dora")


def check_fits(shapes: dict[str, list[int]], model, weights: Path) -> None:
    """Every lora_A/lora_B tensor names a Linear layer of this base, with matching sizes."""
    for key, shape in shapes.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        module_name, kind = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        try:
            layer = model.get_submodule(module_name)
        except AttributeError:
            raise KitError(
                f"{str(weights)!r} targets {module_name!r}, which this base does not have; "
                "expected an adapter trained on this base"
            ) from None
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
    def __init__(
        self,
        base: Path,
        device: str,
        dtype: str,
        trust_remote_code: bool = False,
        max_adapters: int = 4,
        snapshot_on_device: bool = True,
        fused: bool = True,
        cuda_graphs: bool | None = None,
    ):
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
        self.snapshots: dict[frozenset, Snapshot] = {}  # pristine weights per set of LoRA'd layers
        self.snapshot_on_device = snapshot_on_device  # else in CPU memory (eval.snapshot)
        self.lock = threading.RLock()
        self.adapter_loads = 0
        self.reused = 0  # of those, loads that copied weights into spare LoRA modules (no new modules)
        self.signatures: dict[str, str] = {}  # attached adapter -> signature()
        self.spares: OrderedDict[str, tuple[dict, object]] = OrderedDict()  # signature -> evicted LoRA modules
        self.max_spares = 2  # spare module sets kept (one per signature): memory stays bounded
        self.use_fused = fused  # False: PEFT's own forward, merge and HF generate (the reference)
        # decode steps recorded as CUDA graphs (default: on CUDA); True on a CPU runs the same
        # fixed-buffer path with steps re-run instead of replayed (tests)
        on_cuda = str(next(self.model.parameters()).device).startswith("cuda")
        self.cuda_graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        self.fused = None  # kit.lora.fused.FusedLora, made with the PEFT wrapper
        self._decoder = None  # kit.lora.decode.Decoder, made on first use
        self.merged_by = None  # "fused" (addmm_ into the weights) or "peft" (merge_adapter)

    def fingerprint(self) -> str:
        """sha256 of every base weight, bit-exact (LoRA weights excluded)."""

        return fingerprint(self.model, self.base_params)

    # -- adapters ---------------------------------------------------------

    def attach(self, folder: Path, allow_pickle: bool = False, keep=()) -> str:
        """Load an adapter onto the resident base (no-op if attached); returns its PEFT name.
        Adapters named in ``keep`` are not evicted for it (AdapterBusy when only they could be)."""
        folder = Path(folder)
        name = adapter_name(folder)
        with self.lock:
            if name in self.attached:
                self.attached.move_to_end(name)
                return name
            if len(self.attached) >= self.max_adapters and all(n in keep for n in self.attached):
                raise AdapterBusy(name)
            self.restore()  # PEFT unmerges by arithmetic when adapters change; keep it exact
            config, shapes = read_adapter(folder, allow_pickle, read_all=False)
            sig = signature(config, shapes)
            if sig in self.spares:  # LoRA modules of this shape are allocated: copy the weights in
                self._refill(sig, folder, name)
            else:
                read_adapter(folder, allow_pickle)  # read every tensor: a truncated file fails here
                check_fits(shapes, self.model, folder / "adapter_model.safetensors")
                self._load(folder, name)
            self.signatures[name] = sig
            self.attached[name] = folder
            self.adapter_loads += 1
            self._fuse(name)
            while len(self.attached) > self.max_adapters:
                self.detach(next(n for n in self.attached if n not in keep and n != name))
            return name

    def _fuse(self, name: str) -> None:
        """Copy a plain LoRA adapter into a fused slot (others stay PEFT-only)."""
        if not self.use_fused:
            return
        if self.fused is None:
            from kit.lora.fused import FusedLora

            self.fused = FusedLora(self.model, self.max_adapters, static=self.cuda_graphs)
        if is_plain_lora(self.signatures[name]) and self.fused.supports(name):
            self.fused.load(name)

    def fused_for(self, name: str | None) -> bool:
        """Whether ``name`` (None: the bare base) computes through the fused path."""
        if self.fused is None:
            return name is None
        return name is None or name in self.fused.slot_of

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

    def _refill(self, sig: str, folder: Path, name: str) -> None:
        """Give the spare LoRA modules of signature ``sig`` to the adapter in ``folder``
        (as ``name``) and copy its weights into them; a broken file fails before any change."""
        import torch

        tensors = read_tensors(folder / "adapter_model.safetensors", self.model.device)
        stores, config = self.spares.pop(sig)
        for module_name, entries in stores.items():
            module = self.model.get_submodule(module_name)
            for attr, value in entries.items():
                getattr(module, attr)[name] = value
        self.peft.peft_config[name] = config
        with torch.no_grad():
            for key, tensor in tensors.items():  # base_model.model.<module>.lora_A.weight
                module_name, kind = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
                side, param = kind.split(".", 1)
                lora = getattr(self.model.get_submodule(module_name), f"lora_{side}")[name]
                getattr(lora, param).copy_(tensor)  # casts to the module's dtype, as PEFT's own load does
        self.reused += 1

    def _stash(self, name: str) -> None:
        """Take ``name``'s LoRA modules out of PEFT (every per-adapter store on its LoRA
        layers, and its config) and keep them as the spare of their signature."""
        from peft.tuners.lora import LoraLayer

        stores = {}
        for module_name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and name in module.lora_A:
                attrs = dict.fromkeys(module.adapter_layer_names + module.other_param_names + LORA_LAYER_STORES)
                stores[module_name] = {
                    a: getattr(module, a).pop(name)
                    for a in attrs
                    if getattr(module, a, None) is not None and name in getattr(module, a)
                }
        self.spares[self.signatures[name]] = (stores, self.peft.peft_config.pop(name))
        while len(self.spares) > self.max_spares:  # the oldest spare is freed
            self.spares.pop(next(iter(self.spares)))

    def detach(self, name: str) -> None:
        with self.lock:
            self.restore()
            if len(self.peft.peft_config) == 1:  # PEFT needs one adapter left; keep it, unused
                return
            if self.fused is not None:
                self.fused.free(name)
            if is_plain_lora(self.signatures.get(name)):
                self._stash(name)
                if self.peft.active_adapter == name or name in getattr(self.peft, "active_adapters", []):
                    self.peft.set_adapter(next(n for n in self.peft.peft_config))
            else:
                if name in self.peft.active_adapters:  # else PEFT warns "Adapter ... was active which is now deleted"
                    self.peft.set_adapter(next(n for n in self.peft.peft_config if n != name))
                self.peft.delete_adapter(name)
            self.attached.pop(name, None)
            self.signatures.pop(name, None)

    # -- which weights compute ---------------------------------------------

    def activate(self, name: str | None, merged: bool = False, check: bool = True) -> None:
        """Make ``name`` the adapter that computes (None: the bare base); call under ``lock``."""
        if merged and name is not None:
            if self.merged != name:
                self.restore(check)
                self._snapshot_for(name)
                if self.fused is not None and name in self.fused.slot_of:
                    self.fused.merge(name)  # one addmm_ per layer into the resident weights
                    self.fused.use(None)  # the LoRA layers now compute the (merged) base weights only
                    self.merged_by = "fused"
                else:
                    if self.fused is not None:
                        self.fused.mode = None  # PEFT's forward knows what it merged
                    self.peft.set_adapter(name)
                    self.peft.base_model.merge_adapter(adapter_names=[name])
                    self.merged_by = "peft"
                self.merged = name
            return
        self.restore(check)
        if self.fused is not None and self.fused_for(name):
            self.fused.use(name)
            return
        if self.fused is not None:
            self.fused.mode = None  # PEFT's own forward for this adapter
        if name is not None:
            self.peft.set_adapter(name)

    def forward_model(self, name: str | None):
        """The module whose ``generate``/``forward`` computes with the active adapter."""
        if self.fused is not None and self.fused.mode is not None:
            return self.model  # the fused LoRA layers follow the mode activate() set
        if name is None and self.peft is not None:
            return _BaseOnly(self.peft)
        return self.peft if self.peft is not None else self.model

    # -- generation ------------------------------------------------------------------------

    def decoder(self):
        """kit's decode loop on this base (kit.lora.decode), or None where it cannot run it."""
        from kit.lora.decode import Decoder, unsupported

        if self._decoder is None and unsupported(self.model) is None:
            self._decoder = Decoder(self.model, self.fused, capture=self.cuda_graphs)
        if self._decoder is not None:
            self._decoder.fused = self.fused  # made after the decoder when the first adapter came later
        return self._decoder

    def generate(self, name: str | None, merged: bool = False, check: bool = True, **kwargs):
        """``generate(**kwargs)`` with ``name`` active (merged or not): kit's decode loop when it
        reproduces the call (kit.lora.decode.plan), else HF ``generate`` on the same model."""
        from kit.lora.decode import plan

        with self.lock:
            self.activate(name, merged, check)
            loop = self.use_fused and (self.merged is not None or self.fused_for(name))
            settings = plan(self.model, kwargs) if loop else None
            decoder = self.decoder() if settings is not None else None
            if decoder is None:
                return self.forward_model(name).generate(**kwargs)
            slot = None if name is None or self.merged is not None else self.fused.slot_of[name]
            return decoder.generate(kwargs["input_ids"], kwargs.get("attention_mask"), slot, settings)

    def _targets(self, name: str) -> list[str]:
        """Names of the base layers the adapter's LoRA layers wrap."""
        from peft.tuners.lora import LoraLayer

        return [f"{n}.base_layer" for n, m in self.model.named_modules() if isinstance(m, LoraLayer) and name in m.lora_A]

    def _snapshot_for(self, name: str) -> None:
        targets = frozenset(self._targets(name))
        if targets not in self.snapshots:  # taken while unmerged: the weights are pristine
            self.snapshots[targets] = Snapshot.take(self.model, sorted(targets), on_device=self.snapshot_on_device)
        self._merged_targets = targets

    def snapshot_info(self) -> dict | None:
        """Where the in-memory merge snapshots live and why (for summaries), or None before the first merge."""
        if not self.snapshots:
            return None
        snaps = list(self.snapshots.values())
        return {"where": sorted({s.where for s in snaps}), "bytes": sum(s.nbytes for s in snaps), "why": snaps[-1].why}

    def restore(self, check: bool = True) -> None:
        """Undo an in-memory merge by copying the pristine weights back (bit-exact), then
        compare on-device checksums with the pristine ones (``check``)."""
        if self.merged is None:
            return

        from peft.tuners.lora import LoraLayer

        snap = self.snapshots[self._merged_targets]
        snap.restore(self.model)  # the saved bits, not PEFT's unmerge arithmetic (it drifts in bf16)
        if self.merged_by == "peft":
            for module in self.model.modules():  # and PEFT's bookkeeping to match: nothing merged
                if isinstance(module, LoraLayer):
                    module.merged_adapters.clear()
        self.merged = self.merged_by = None
        if check:
            differ = snap.verify(self.model)
            if differ:
                raise KitError(
                    f"base {str(self.base)!r} weights differ from their snapshot after restore "
                    f"({len(differ)} tensor(s), first {differ[0]!r}); expected a bit-exact restore"
                )


class _BaseOnly:
    """``generate`` and the forward of the PEFT model with every adapter disabled: the bare base."""

    def __init__(self, peft_model):
        self.peft = peft_model

    def generate(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft.generate(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft(*args, **kwargs)
