"""Fused unmerged LoRA: the adapters PEFT loaded, computed with fewer and larger GEMMs.

PEFT stays the loader (it resolves ``rank_pattern``, ``alpha_pattern`` and rsLoRA into each
layer's ``r`` and ``scaling``) and the reference; this module only changes how the LoRA
term is computed once the weights are loaded. Per group of LoRA layers that read the same
input (``q_proj``/``k_proj``/``v_proj``; ``gate_proj``/``up_proj``; every other layer alone,
``lm_head`` and Phi-3's fused ``qkv_proj``/``gate_up_proj`` included):

- the adapters' A matrices are stacked in one buffer per group, ``A[slot, member, rank, in]``,
  and the B matrices per member in ``B[out, slot, rank]``, both in the base dtype, B already
  multiplied by the layer's scaling, ranks zero-padded to the group's largest (zeros add
  exactly nothing);
- one **shrink** GEMM per group (``x @ A.T`` for every member at once), then per member one
  **expand** added into the base layer's output in place (``y.addmm_(s, B.T)``): one kernel,
  no full-size temporary, no separate scale or add.

Modes (``FusedLora.mode``): ``None`` PEFT's own forward (merges, DoRA and other variants,
``adapter_names``); ``"base"`` the base layers only (the bare base, or weights merged in
place); ``"single"`` one adapter for every row; ``"mixed"`` a slot per row: the shrink runs
over every slot's A at once, a one-hot row mask keeps each row's own slot, and one expand
per member runs over every slot's B, so a batch mixing adapters costs one GEMM pair per
member, with no Python loop over adapters and no gather of weights per row (the cost is
S x the LoRA FLOPs, which are r(in+out)/(in*out) of the base's: about 1% per slot at r16).

The member that finds the group's shrink already computed for the same input tensor (by
identity) reuses it; one called with another input computes it afresh, so a family that
calls its projections in another order or on other inputs stays correct.

``static=True`` (CUDA graphs): ``"single"`` mode reads a fixed copy of the active slot,
so a graph recorded once serves every adapter (switching copies weights, never re-records).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

# children of one module that are called on the same input tensor (HF attention and MLP blocks)
SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def plain_lora_layer(layer, name: str) -> bool:
    """Whether ``layer`` computes adapter ``name`` as plain ``B(A(x)) * scaling`` over an
    ``nn.Linear`` (what the fused path reproduces); DoRA, aLoRA, LoRA bias, Conv1D-style
    ``fan_in_fan_out`` and embeddings are left to PEFT."""
    import torch
    from peft.tuners.lora.layer import Linear

    return (
        isinstance(layer, Linear)
        and type(layer.get_base_layer()) is torch.nn.Linear
        and name in layer.lora_A
        and name not in layer.lora_variant
        and not layer.lora_bias.get(name, False)
        and not getattr(layer, "fan_in_fan_out", False)
    )


@dataclass
class Group:
    """LoRA layers that read one input: one shrink for all of them."""

    names: list[str]  # module names, in call order
    layers: list  # their PEFT LoRA layers
    in_features: int
    outs: list[int]
    rank: int  # padded rank R
    A: object = None  # [S, k, R, in]
    B: list = field(default_factory=list)  # per member [out, S, R]
    A1: object = None  # static: [k, R, in], the active slot's copy
    B1: list = field(default_factory=list)  # static: per member [out, R]
    x: object = None  # the input the cached shrink was computed from
    s: object = None

    @property
    def k(self) -> int:
        return len(self.layers)


class FusedLora:
    def __init__(self, model, slots: int, static: bool = False):
        self.model = model
        self.slots = slots
        self.static = static
        self.mode: str | None = None
        self.groups: list[Group] = []
        self.slot_of: dict[str, int] = {}  # adapter -> slot
        self.written: dict[int, int] = {}  # slot -> generation of its content
        self.version = 0  # bumps when buffers are reallocated: recorded graphs are then stale
        self.active: int | None = None  # slot of "single" mode
        self._copied: tuple | None = None  # (slot, generation, version) held in A1/B1
        self.onehot = None  # "mixed": [rows, S, 1] in the base dtype
        self._per_token: dict = {}  # tokens per row -> onehot repeated for every token
        self._layout = None
        self._lock = threading.RLock()

    # -- which adapters and modules ------------------------------------------------------------

    def _lora_layers(self) -> dict:
        from peft.tuners.lora import LoraLayer

        return {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)}

    def supports(self, name: str) -> bool:
        """Every LoRA layer of adapter ``name`` is plain LoRA on a Linear."""
        layers = [m for m in self._lora_layers().values() if name in m.lora_A]
        return bool(layers) and all(plain_lora_layer(m, name) for m in layers)

    def _grouping(self, layers: dict) -> list[list[str]]:
        """Module names grouped by shared input (same parent, same SHARED_INPUT set, same in_features)."""
        plain = [n for n, m in layers.items() if _is_linear_lora(m)]
        groups, used = [], set()
        for n in plain:
            if n in used:
                continue
            parent, _, child = n.rpartition(".")
            family = next((f for f in SHARED_INPUT if child in f), None)
            members = [n]
            if family is not None:
                sibs = [f"{parent}.{c}" if parent else c for c in family]
                members = [s for s in sibs if s in layers and s in plain and s not in used]
                members = [s for s in members if layers[s].in_features == layers[n].in_features] or [n]
            used.update(members)
            groups.append(members)
        return groups

    # -- buffers -------------------------------------------------------------------------------

    def load(self, name: str) -> int:
        """Give adapter ``name`` a slot and copy its weights in (rebuilding the buffers when
        PEFT added LoRA layers or a larger rank arrived); returns the slot."""
        with self._lock:
            if name in self.slot_of:
                self._write(name, self.slot_of[name])
                return self.slot_of[name]
            used = set(self.slot_of.values())
            free = [s for s in range(self.slots) if s not in used]
            grow = not free  # more adapters attached than slots (the owner raised its cap)
            if grow:
                free, self.slots = [self.slots], self.slots + 1
            self.slot_of[name] = free[0]
            if grow or self._needs_rebuild():
                self._rebuild()
            else:
                self._write(name, free[0])
            return free[0]

    def free(self, name: str) -> None:
        with self._lock:
            slot = self.slot_of.pop(name, None)
            if slot is not None and self.active == slot:
                self.mode, self.active = "base", None  # nothing computes an evicted adapter

    def _ranks(self, layers: dict, names: list[str]) -> int:
        return max([layers[n].r[a] for n in names for a in self.slot_of if a in layers[n].r] + [1])

    def _needs_rebuild(self) -> bool:
        layers = self._lora_layers()
        layout = tuple(sorted(n for n, m in layers.items() if _is_linear_lora(m)))
        if layout != self._layout:
            return True
        return any(self._ranks(layers, g.names) > g.rank for g in self.groups)

    def _rebuild(self) -> None:
        """New buffers for the current LoRA layers, every slotted adapter copied in again."""
        import torch

        with torch.inference_mode(False):  # plain tensors: written in place later, in or out of inference mode
            self._allocate()
        for name, slot in self.slot_of.items():
            self._write(name, slot)
        self._hook()

    def _allocate(self) -> None:
        import torch

        layers = self._lora_layers()
        self._unhook()
        self.groups = []
        for names in self._grouping(layers):
            members = [layers[n] for n in names]
            weight = members[0].get_base_layer().weight
            g = Group(names, members, members[0].in_features, [m.out_features for m in members], self._ranks(layers, names))
            opts = {"dtype": weight.dtype, "device": weight.device}
            g.A = torch.zeros(self.slots, g.k, g.rank, g.in_features, **opts)
            g.B = [torch.zeros(out, self.slots, g.rank, **opts) for out in g.outs]
            if self.static:
                g.A1 = torch.zeros(g.k, g.rank, g.in_features, **opts)
                g.B1 = [torch.zeros(out, g.rank, **opts) for out in g.outs]
            self.groups.append(g)
        self._layout = tuple(sorted(n for n, m in layers.items() if _is_linear_lora(m)))
        self.version += 1
        self._copied = None

    def _write(self, name: str, slot: int) -> None:
        import torch

        with torch.no_grad():
            for g in self.groups:
                g.A[slot].zero_()
                for m, layer in enumerate(g.layers):
                    g.B[m][:, slot].zero_()
                    if name not in layer.lora_A or not plain_lora_layer(layer, name):
                        continue
                    r = layer.r[name]
                    g.A[slot, m, :r].copy_(layer.lora_A[name].weight)
                    g.B[m][:, slot, :r].copy_(layer.lora_B[name].weight.float() * layer.scaling[name])
        self.written[slot] = self.written.get(slot, 0) + 1

    # -- modes ---------------------------------------------------------------------------------

    def use(self, name: str | None) -> None:
        """One adapter for every row (None: the base layers only)."""
        if name is None:
            self.mode, self.active = "base", None
            return
        slot = self.slot_of[name]
        self.mode, self.active = "single", slot
        if self.static:
            self._copy_active(slot)

    def use_rows(self, slots: list[int | None]) -> None:
        """A slot per row (None: the base) for the next forwards over ``len(slots)`` rows;
        one adapter for all rows becomes "single" or "base"."""
        import torch

        distinct = set(slots)
        if len(distinct) == 1:
            only = next(iter(distinct))
            if only is None:
                self.mode, self.active = "base", None
            else:
                self.mode, self.active = "single", only
                if self.static:
                    self._copy_active(only)
            return
        weight = self.groups[0].A
        hot = torch.zeros(len(slots), self.slots, dtype=weight.dtype)
        for row, slot in enumerate(slots):
            if slot is not None:
                hot[row, slot] = 1
        self.set_onehot(hot.to(weight.device))

    def set_onehot(self, hot) -> None:
        """"mixed" mode with this per-row [rows, S] slot mask (a captured graph passes its own buffer)."""
        self.mode, self.onehot, self._per_token = "mixed", hot.unsqueeze(-1), {}

    def _token_mask(self, n: int):
        """The [n, S, 1] mask for n input vectors: rows x tokens (a prefill), or one per row."""
        rows = self.onehot.shape[0]
        if n == rows:
            return self.onehot
        if n not in self._per_token:
            self._per_token[n] = self.onehot.repeat_interleave(n // rows, dim=0)
        return self._per_token[n]

    def _copy_active(self, slot: int) -> None:
        key = (slot, self.written.get(slot), self.version)
        if self._copied == key:
            return
        import torch

        with torch.no_grad():
            for g in self.groups:
                g.A1.copy_(g.A[slot])
                for m in range(g.k):
                    g.B1[m].copy_(g.B[m][:, slot])
        self._copied = key

    # -- merging in place ----------------------------------------------------------------------

    def merge(self, name: str) -> int:
        """``W += scale * B @ A`` for every layer of adapter ``name``, one ``addmm_`` each into the
        resident weight (read and written once, no ``B @ A`` temporary); returns the layer count."""
        import torch

        slot = self.slot_of[name]
        count = 0
        with torch.no_grad():
            for g in self.groups:
                for m, layer in enumerate(g.layers):
                    if name in layer.lora_A:
                        layer.get_base_layer().weight.addmm_(g.B[m][:, slot], g.A[slot, m])
                        count += 1
        return count

    # -- the forward ---------------------------------------------------------------------------

    def _hook(self) -> None:
        for g in self.groups:
            for m, layer in enumerate(g.layers):
                layer.forward = _fused_forward(self, g, m, layer)

    def _unhook(self) -> None:
        for g in self.groups:
            for layer in g.layers:
                layer.__dict__.pop("forward", None)  # back to PEFT's class forward

    def close(self) -> None:
        self._unhook()
        self.groups = []

    def shrink(self, g: Group, x2d):
        if self.mode == "single":
            A = g.A1 if self.static else g.A[self.active]
            return x2d @ A.view(g.k * g.rank, g.in_features).T
        return x2d @ g.A.view(self.slots * g.k * g.rank, g.in_features).T

    def expand(self, g: Group, m: int, s, y2d) -> None:
        R = g.rank
        if self.mode == "single":
            B = g.B1[m] if self.static else g.B[m][:, self.active]
            y2d.addmm_(s[:, m * R : (m + 1) * R], B.T)
            return
        n = s.shape[0]
        sm = s.view(n, self.slots, g.k, R)[:, :, m] * self._token_mask(n)  # each row keeps its own slot's columns
        y2d.addmm_(sm.view(n, self.slots * R), g.B[m].view(g.outs[m], self.slots * R).T)


def _is_linear_lora(layer) -> bool:
    import torch
    from peft.tuners.lora.layer import Linear

    return isinstance(layer, Linear) and type(layer.get_base_layer()) is torch.nn.Linear


def _fused_forward(fused: FusedLora, g: Group, m: int, layer):
    original = type(layer).forward.__get__(layer)
    base = layer.base_layer
    last = g.k - 1

    def forward(x, *args, **kwargs):
        if fused.mode is None or layer.disable_adapters or layer.merged_adapters or kwargs.get("adapter_names") is not None:
            return original(x, *args, **kwargs)
        y = base(x, *args, **kwargs)
        if fused.mode == "base":
            return y
        if g.x is not x:  # the first member called with this input: one shrink for all members
            g.x, g.s = x, fused.shrink(g, x.reshape(-1, g.in_features))
        s = g.s
        if m == last:
            g.x = g.s = None  # hold no activations past the group
        if y.is_contiguous():
            fused.expand(g, m, s, y.view(-1, g.outs[m]))
            return y
        y2d = y.reshape(-1, g.outs[m]).clone()
        fused.expand(g, m, s, y2d)
        return y2d.view(y.shape)

    return forward
