"""How close two evaluation paths must be, relative to the logits' scale and the dtype.

Two paths that compute the same model differ only by rounding: the order of float
additions (fp32), or where each path rounds its intermediate results (an unmerged
adapter adds ``x@A@B`` to ``x@W``; a merged one rounds ``W + B@A`` once). Rounding
errors scale with the values rounded, so the difference grows with the logits' size:
a fixed absolute limit that suits a random tiny model (logits near 0) fails a real
model whose logits reach 20-40. The limit is therefore per probe position (row):

    max |logit diff| of the row <= logit_ulps * eps(dtype) * max|logit| of the row + logit_abs_floor

fp32 (eps 2**-23): strict. Every row within that limit and every top-1 token agrees.
A wrong adapter (a scaled or permuted lora_B, a halved alpha) moves logits by far more
than any rounding (0.1 and up), so it still fails.

bf16/fp16: each path's rounding is a few units in the last place of the row's largest
logit (bf16 eps = 2**-7) at every layer, so logits legitimately differ and two logits
each off by that can swap places when they are close. A top-1 disagreement therefore
counts as a mismatch only when the reference's margin exceeds
``margin_ulps * eps * max|logit|``: near-ties are excused, real errors are not. The
relative limit is reported for these dtypes but not enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.core.device import torch_dtype


@dataclass
class Tolerance:
    dtype: str  # fp32 | bf16 | fp16
    logit_ulps: float
    logit_abs_floor: float
    margin_ulps: float

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
            return {"max_abs_per_row": self.rule(), "top1_agreement": 1.0}
        bound = f"{self.margin_ulps:g} * {self.eps():.3g} * max|logit| of the row"
        return {"top1_flip_counts_when_margin_above": bound}

    def row_limit(self, ref_rows):
        """Per position: the largest |logit diff| rounding can explain."""
        return self.logit_ulps * self.eps() * ref_rows.abs().amax(-1) + self.logit_abs_floor

    def margin_bound(self, ref_rows):
        """Per position: the top-1 margin below which a flip is a near-tie (0 in fp32)."""
        if self.strict:
            return ref_rows.new_zeros(ref_rows.shape[:-1])
        return self.margin_ulps * self.eps() * ref_rows.abs().amax(-1)


def top2_margin(rows):
    top = rows.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def compare_logits(ref: list, got: list, tol: Tolerance) -> dict:
    """Figures for one path against the reference, over all probe positions (fp32 math)."""
    import torch

    r = torch.cat([x.float().reshape(-1, x.shape[-1]) for x in ref])
    g = torch.cat([x.float().reshape(-1, x.shape[-1]) for x in got])
    row_diff = (r - g).abs().amax(-1)
    ratio = row_diff / tol.row_limit(r)
    worst = int(ratio.argmax())
    flips = r.argmax(-1) != g.argmax(-1)
    counted = flips & (top2_margin(r) > tol.margin_bound(r))
    figures = {
        "max_abs_diff": row_diff.max().item(),
        "max_abs_logit": r.abs().max().item(),
        # the worst row's |diff| as a share of its limit (<= 1 passes in fp32)
        "diff_over_limit": ratio[worst].item(),
        "limit_at_worst_row": tol.row_limit(r)[worst].item(),
        "top1_agreement": 1.0 - flips.float().mean().item(),
        "positions": int(r.shape[0]),
        "top1_mismatches": int(counted.sum()),
        "near_tie_flips": int((flips & ~counted).sum()),
    }
    ok = figures["top1_mismatches"] == 0 and (not tol.strict or figures["diff_over_limit"] <= 1.0)
    return {"passed": ok, **figures}


def limit_note(f: dict, tol: Tolerance) -> str:
    """What a failure message says about the limit (fp32 only)."""
    if not tol.strict:
        return ""
    return f" ({f['diff_over_limit']:.3g}x the limit {tol.rule()})"
