"""Fused unmerged LoRA: the adapters PEFT loaded, computed with fewer and larger GEMMs.

PEFT stays the loader (it resolves ``rank_pattern``, ``alpha_pattern`` and rsLoRA into each
layer's ``r`` and ``scaling``) and the reference; this module only changes how the LoRA
term is computed once the weights are loaded. Per group of LoRA layers that read the same
input (``q_proj``/``k_proj``/``v_proj``; ``gate_proj``/``up_proj``; every other layer alone,
``lm_head`` and Phi-3's fused ``qkv_proj``/``gate_up_proj`` included):

- per adapter, the members' A matrices are stacked in one ``[members * r, in]`` matrix and
  the B matrices kept per member, in the base dtype, B already multiplied by the layer's
  scaling (``r``: the adapter's largest rank in the group; smaller ranks zero-padded, zeros
  add exactly nothing), so an adapter computes the same bits whatever else is attached;
- one **shrink** GEMM per group (``x @ A.T`` for every member at once), then per member one
  **expand** added into the base layer's output in place (``y.addmm_(s, B.T)``): one kernel,
  no full-size temporary, no separate scale or add.

Modes (``FusedLora.mode``): ``None`` PEFT's own forward (merges, DoRA and other variants,
``adapter_names``); ``"base"`` the base layers only (the bare base, or weights merged in
place); ``"single"`` one adapter for every row; ``"mixed"`` a slot per row: every slotted
adapter's A stacked in ``A[slot, member, R, in]`` and its B in ``B[out, slot, R]`` (R: the
group's largest rank), the shrink runs over every slot at once, a one-hot row mask keeps
each row's own slot's columns, and one expand per member runs over every slot's B: a batch
mixing adapters costs one GEMM pair per member, no Python loop over adapters and no gather
of weights per row (the cost: S x the LoRA FLOPs, which are r(in+out)/(in*out) of the
base's, about 1% per slot at r16; each adapter's bytes are read once per step).

The member that finds the group's shrink already computed for the same input tensor (by
identity) reuses it; one called with another input computes it afresh, so a family that
calls its projections in another order or on other inputs stays correct.

``static=True`` (CUDA graphs): ``"single"`` mode reads a fixed copy of the active adapter
(one per set of ranks), so a graph recorded once serves every adapter of those ranks
(switching copies weights, never re-records); ``"mixed"`` reads the slot buffers and a
fixed row mask.
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
    cur: tuple | None = None  # "single": (A [k*r, in], [B per member], r)
    rank: int = 0  # "mixed": padded rank R of the slot buffers
    A: object = None  # "mixed": [S, k, R, in]
    B: list = field(default_factory=list)  # "mixed": per member [out, S, R]
    x: object = None  # the input the cached shrink was computed from
    s: object = None

    @property
    def k(self) -> int:
        return len(self.layers)


@dataclass
class Weights:
    """One adapter in one group, at its own rank r: A [k, r, in], B per member [out, r] (scaled)."""

    rank: int
    A: object
    B: list


class FusedLora:
    def __init__(self, model, slots: int, static: bool = False):
        self.model = model
        self.slots = slots
        self.static = static
        self.mode: str | None = None
        self.groups: list[Group] = []
        self.slot_of: dict[str, int] = {}  # adapter -> slot (its row index in "mixed")
        self.weights: dict[str, list[Weights]] = {}  # adapter -> per group
        self.generation: dict[str, int] = {}  # adapter -> times its weights were written
        self.version = 0  # bumps when a buffer graphs read is reallocated (recorded graphs are stale)
        self.active: str | None = None  # the adapter of "single" mode
        self.onehot = None  # "mixed": [rows, S, 1] in the base dtype
        self._per_token: dict = {}  # tokens per row -> onehot repeated for every token
        self._copies: dict = {}  # static: ranks -> [per group Weights, the (adapter, generation) held]
        self._mixed_ok = False  # slot buffers hold every slotted adapter
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

    # -- adapters in and out -------------------------------------------------------------------

    def load(self, name: str) -> int:
        """Copy adapter ``name``'s weights out of PEFT (regrouping when PEFT added LoRA layers)
        and give it a slot; returns the slot."""
        with self._lock:
            if name not in self.slot_of:
                used = set(self.slot_of.values())
                free = [s for s in range(self.slots) if s not in used]
                if not free:  # more adapters attached than slots (the owner raised its cap)
                    free, self.slots = [self.slots], self.slots + 1
                    self._drop_mixed()
                self.slot_of[name] = free[0]
            layers = self._lora_layers()
            layout = tuple(sorted(n for n, m in layers.items() if _is_linear_lora(m)))
            if layout != self._layout:
                self._regroup(layers, layout)
            else:
                self._take(name)
            self._mixed_ok = False
            return self.slot_of[name]

    def free(self, name: str) -> None:
        with self._lock:
            self.slot_of.pop(name, None)
            self.weights.pop(name, None)
            self._mixed_ok = False
            if self.active == name:
                self.mode, self.active = "base", None  # nothing computes an evicted adapter

    def _regroup(self, layers: dict, layout: tuple) -> None:
        self._unhook()
        self.groups = []
        for names in self._grouping(layers):
            members = [layers[n] for n in names]
            self.groups.append(Group(names, members, members[0].in_features, [m.out_features for m in members]))
        self._layout = layout
        self._copies = {}
        self._drop_mixed()
        for name in self.slot_of:
            self._take(name)
        self._hook()

    def _take(self, name: str) -> None:
        """Adapter ``name``'s weights per group at its own rank, in the base dtype, B scaled."""
        import torch

        per_group = []
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: copied and read in any mode
            for g in self.groups:
                ranks = [layer.r[name] for layer in g.layers if name in layer.lora_A]
                r = max(ranks, default=1)
                weight = g.layers[0].get_base_layer().weight
                opts = {"dtype": weight.dtype, "device": weight.device}
                A = torch.zeros(g.k, r, g.in_features, **opts)
                B = [torch.zeros(out, r, **opts) for out in g.outs]
                for m, layer in enumerate(g.layers):
                    if name in layer.lora_A:
                        rm = layer.r[name]
                        A[m, :rm].copy_(layer.lora_A[name].weight)
                        B[m][:, :rm].copy_(layer.lora_B[name].weight.float() * layer.scaling[name])
                per_group.append(Weights(r, A, B))
        self.weights[name] = per_group
        self.generation[name] = self.generation.get(name, 0) + 1

    # -- modes ---------------------------------------------------------------------------------

    def use(self, name: str | None) -> None:
        """One adapter for every row (None: the base layers only)."""
        if name is None:
            self.mode, self.active = "base", None
            return
        per_group = self._copy(name) if self.static else self.weights[name]
        for g, w in zip(self.groups, per_group):
            g.cur = (w.A.view(g.k * w.rank, g.in_features), w.B, w.rank)
        self.mode, self.active = "single", name

    def ranks(self, name: str) -> tuple:
        """The adapter's rank per group: adapters with equal ranks share static buffers (and graphs)."""
        return tuple(w.rank for w in self.weights[name])

    def _copy(self, name: str) -> list[Weights]:
        """static: the fixed buffers for this adapter's ranks, holding its weights."""
        import torch

        key = self.ranks(name)
        if key not in self._copies:
            with torch.inference_mode(False):
                made = [Weights(w.rank, w.A.clone(), [b.clone() for b in w.B]) for w in self.weights[name]]
            self._copies[key] = [made, None]
        made, held = self._copies[key]
        if held != (name, self.generation[name]):
            with torch.no_grad():
                for dst, src in zip(made, self.weights[name]):
                    dst.A.copy_(src.A)
                    for d, s in zip(dst.B, src.B):
                        d.copy_(s)
            self._copies[key][1] = (name, self.generation[name])
        return made

    def use_rows(self, slots: list[int | None]) -> None:
        """A slot per row (None: the base) for the next forwards over ``len(slots)`` rows;
        one adapter for all rows becomes "single" or "base"."""
        import torch

        distinct = set(slots)
        if len(distinct) == 1:
            only = next(iter(distinct))
            self.use(None if only is None else next(n for n, s in self.slot_of.items() if s == only))
            return
        self._ensure_mixed()
        weight = self.groups[0].A
        hot = torch.zeros(len(slots), self.slots, dtype=weight.dtype)
        for row, slot in enumerate(slots):
            if slot is not None:
                hot[row, slot] = 1
        self.set_onehot(hot.to(weight.device))

    def set_onehot(self, hot) -> None:
        """ "mixed" mode with this per-row [rows, S] slot mask (a captured graph passes its own buffer)."""
        self.mode, self.onehot, self._per_token = "mixed", hot.unsqueeze(-1), {}

    def _token_mask(self, n: int):
        """The [n, S, 1] mask for n input vectors: rows x tokens (a prefill), or one per row."""
        rows = self.onehot.shape[0]
        if n == rows:
            return self.onehot
        if n not in self._per_token:
            self._per_token[n] = self.onehot.repeat_interleave(n // rows, dim=0)
        return self._per_token[n]

    def _drop_mixed(self) -> None:
        for g in self.groups:
            g.A, g.B, g.rank = None, [], 0
        self._mixed_ok = False
        self.version += 1

    def _ensure_mixed(self) -> None:
        """Fill the slot buffers (reallocated only when a larger rank or more slots arrived)."""
        import torch

        if self._mixed_ok:
            return
        with torch.inference_mode(False), torch.no_grad():
            for gi, g in enumerate(self.groups):
                R = max([self.weights[n][gi].rank for n in self.slot_of] + [1])
                if g.A is None or R > g.rank:
                    weight = g.layers[0].get_base_layer().weight
                    opts = {"dtype": weight.dtype, "device": weight.device}
                    g.rank, g.A = R, torch.zeros(self.slots, g.k, R, g.in_features, **opts)
                    g.B = [torch.zeros(out, self.slots, R, **opts) for out in g.outs]
                    self.version += 1
                g.A.zero_()
                for b in g.B:
                    b.zero_()
                for name, slot in self.slot_of.items():
                    w = self.weights[name][gi]
                    g.A[slot, :, : w.rank].copy_(w.A)
                    for m, b in enumerate(g.B):
                        b[:, slot, : w.rank].copy_(w.B[m])
        self._mixed_ok = True

    # -- merging in place ----------------------------------------------------------------------

    def merge(self, name: str) -> int:
        """``W += scale * B @ A`` for every layer of adapter ``name``, one ``addmm_`` each into the
        resident weight (read and written once, no ``B @ A`` temporary); returns the layer count."""
        import torch

        count = 0
        with torch.no_grad():
            for g, w in zip(self.groups, self.weights[name]):
                for m, layer in enumerate(g.layers):
                    if name in layer.lora_A:
                        layer.get_base_layer().weight.addmm_(w.B[m], w.A[m])
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
            return x2d @ g.cur[0].T
        return x2d @ g.A.view(self.slots * g.k * g.rank, g.in_features).T

    def expand(self, g: Group, m: int, s, y2d) -> None:
        if self.mode == "single":
            _, B, r = g.cur
            y2d.addmm_(s[:, m * r : (m + 1) * r], B[m].T)
            return
        n, R = s.shape[0], g.rank
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
