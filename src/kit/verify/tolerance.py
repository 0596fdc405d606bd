"""How close an evaluation path must be to the reference, and why that close.

The reference is always computed in fp32: PEFT ``merge_and_unload`` of the adapter on a
base loaded in fp32 (kit/verify/context.py). Every eval path (``merge`` as ``eval=merge``
builds it, the exported full model, ``merge_in_memory``, ``direct``) is compared with it at
every probe position (row of logits), in the dtype the evals run in.

fp32 (eps 2**-23): paths differ from the reference only by the order of float additions.
Rounding scales with the values rounded, so the limit is per row:

    max |logit diff| of the row <= logit_ulps * eps * max|logit| of the row + logit_abs_floor

and every top-1 token must agree. A wrong adapter moves logits by 1e-3 and more (a 2 %
change to one lora_B: ~0.3 at max|logit| 16), far beyond it.

bf16 / fp16: rounding alone moves logits by several units in the last place of the row's
largest logit at every layer (measured: 4-6 % of max|logit| on SmolLM2's 30 layers, with
3-6 % of top-1 tokens flipped), so no rule written in ulps or top-1 flips separates rounding
from a wrong model. The limit is instead the rounding of *this* model in *this* dtype,
measured on the same probes: the reference's own weights rounded to the dtype and run in it
(its buffers, such as rotary ``inv_freq``, kept as a load in that dtype keeps them: fp32).
Per position two figures, each against the same figure of that rounding yardstick:

    relative error  = max |logit diff| / max |reference logit|  (of the row)
    KL              = KL(softmax(reference) || softmax(path))    (nats)

A path passes when its worst and its mean relative error are at most ``rounding_factor``
times the yardstick's worst and mean, and its worst and mean KL at most
``rounding_factor**2`` times the yardstick's (KL grows with the square of a small logit
error). Measured (bf16, CPU): correct paths reach 0.6-1.5x the yardstick's relative error and
0.2-3.2x its KL (tiny default; SmolLM2 with three adapters); another run's adapter is 81x
(tiny, trained) and 3.3-4.7x (SmolLM2, random adapters that change the model by only ~3x the
rounding) in relative error. ``rounding_factor`` 3 sits between. A fault smaller than the
dtype's rounding cannot be seen in that dtype's logits at all; the adapter's weights and its
fp32 model are checked exactly, whatever the eval dtype (kit/verify/adapter_folder.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.core.device import torch_dtype


@dataclass
class Tolerance:
    dtype: str  # fp32 | bf16 | fp16
    logit_ulps: float
    logit_abs_floor: float
    margin_ulps: float  # generation in bf16/fp16: a greedy divergence at a near-tie is excused
    rounding_factor: float = 3.0

    @property
    def strict(self) -> bool:
        return self.dtype == "fp32"

    def eps(self) -> float:
        import torch

        return torch.finfo(torch_dtype(self.dtype)).eps

    def rule(self) -> str:
        return f"{self.logit_ulps:g} * {self.eps():.3g} * max|logit| of the row + {self.logit_abs_floor:g}"

    def describe(self) -> dict:
        if self.strict:
            return {"reference": "fp32", "max_abs_per_row": self.rule(), "top1_agreement": 1.0}
        c = self.rounding_factor
        return {
            "reference": "fp32",
            "relative_error": f"worst and mean <= {c:g} x the {self.dtype} rounding yardstick's",
            "kl": f"worst and mean <= {c * c:g} x the {self.dtype} rounding yardstick's",
        }

    def row_limit(self, ref_rows):
        """Per position: the largest |logit diff| fp32 rounding can explain."""
        return self.logit_ulps * self.eps() * ref_rows.abs().amax(-1) + self.logit_abs_floor

    def margin_bound(self, ref_rows):
        """Per position: the top-1 margin below which a greedy divergence is a near-tie (0 in fp32)."""
        if self.strict:
            return ref_rows.new_zeros(ref_rows.shape[:-1])
        return self.margin_ulps * self.eps() * ref_rows.abs().amax(-1)

    def floors(self, ref_rows) -> dict:
        """The smallest yardstick figures used, so that a model whose rounding happened to cancel
        on the probes gets no zero limit: half an ulp of the row's largest logit, and the KL that
        logits each off by that can give at most (Hoeffding: KL <= (range of the diffs)**2 / 8,
        here (u * max|logit|)**2 / 2, averaged over the rows)."""
        u = self.eps() / 2
        return {"rel": u, "kl": ((u * ref_rows.abs().amax(-1)) ** 2 / 2).mean().item()}


def top2_margin(rows):
    top = rows.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def flat(rows: list):
    import torch

    return torch.cat([x.float().reshape(-1, x.shape[-1]) for x in rows])


def position_errors(ref: list, got: list) -> dict:
    """Per position (row): relative error and KL(reference || path), fp32 math."""
    r, g = flat(ref), flat(got)
    rel = (g - r).abs().amax(-1) / r.abs().amax(-1).clamp_min(1e-30)
    lp, lq = r.log_softmax(-1), g.log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)  # >= 0; rounding of the sum can dip below
    return {"rel": rel, "kl": kl}


def summarise(errors: dict) -> dict:
    return {
        "rel_max": errors["rel"].max().item(),
        "rel_mean": errors["rel"].mean().item(),
        "kl_max": errors["kl"].max().item(),
        "kl_mean": errors["kl"].mean().item(),
    }


def rounding_yardstick(ref: list, rounded: list, tol: Tolerance) -> dict:
    """The dtype's rounding on this model: the reference rounded to the dtype against itself."""
    figures = summarise(position_errors(ref, rounded))
    floor = tol.floors(flat(ref))
    return {**figures, "floor_rel": floor["rel"], "floor_kl": floor["kl"]}


def compare_logits(ref: list, got: list, tol: Tolerance, rounding: dict | None = None) -> dict:
    """Figures for one path against the fp32 reference over all probe positions; ``rounding``
    (the yardstick) is needed for bf16/fp16."""
    r, g = flat(ref), flat(got)
    row_diff = (r - g).abs().amax(-1)
    flips = r.argmax(-1) != g.argmax(-1)
    figures = {
        "max_abs_diff": row_diff.max().item(),
        "max_abs_logit": r.abs().max().item(),
        "top1_agreement": 1.0 - flips.float().mean().item(),
        "positions": int(r.shape[0]),
        **summarise(position_errors(ref, got)),
    }
    if tol.strict:
        ratio = row_diff / tol.row_limit(r)
        worst = int(ratio.argmax())
        # the worst row's |diff| as a share of its limit (<= 1 passes)
        figures.update(diff_over_limit=ratio[worst].item(), limit_at_worst_row=tol.row_limit(r)[worst].item())
        ok = figures["diff_over_limit"] <= 1.0 and not flips.any()
        return {"passed": bool(ok), **figures}
    if rounding is None:
        raise ValueError(f"a {tol.dtype} comparison needs the rounding yardstick")
    ratios = rounding_ratios(figures, rounding)
    figures["over_rounding"] = ratios
    limits = {k: tol.rounding_factor ** (2 if k.startswith("kl") else 1) for k in ratios}
    figures["limits"] = limits
    return {"passed": all(ratios[k] <= limits[k] for k in ratios), **figures}


def rounding_ratios(figures: dict, rounding: dict) -> dict:
    """Each figure of a path as a multiple of the yardstick's (its floor where that is smaller)."""
    out = {}
    for key in ("rel_max", "rel_mean", "kl_max", "kl_mean"):
        floor = rounding["floor_kl" if key.startswith("kl") else "floor_rel"]
        out[key] = figures[key] / max(rounding[key], floor)
    return out


def limit_note(f: dict, tol: Tolerance) -> str:
    """What a failure message says about the limit."""
    if tol.strict:
        return f" ({f['diff_over_limit']:.3g}x the limit {tol.rule()})"
    worst = max(f["over_rounding"], key=lambda k: f["over_rounding"][k] / f["limits"][k])
    return (
        f" ({worst} {f[worst]:.3g} = {f['over_rounding'][worst]:.3g}x the {tol.dtype} rounding yardstick's, "
        f"limit {f['limits'][worst]:g}x)"
    )
