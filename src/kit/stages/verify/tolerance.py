"""How close two evaluation paths must be, by dtype.

fp32: strict. Two paths that compute the same model differ only by the order of
float additions (~1e-6 on logits), so max |logit diff| <= ``fp32_max_abs`` and
every top-1 token must agree.

bf16/fp16: each path rounds its own intermediate results (an unmerged adapter adds
``x@A@B`` to ``x@W``; a merged one rounds ``W + B@A`` once), so logits legitimately
differ by a few units in the last place of the row's largest logit: about
``eps * max|logit|`` each (bf16 eps = 2**-7). Two logits each off by that can swap
places only when the reference's top-1 margin is within ``margin_ulps * eps * max|logit|``.
A top-1 disagreement therefore counts as a mismatch only when the reference's
margin exceeds that bound: near-ties are excused, real errors (which move logits
by far more than the rounding) are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.core.device import torch_dtype


@dataclass
class Tolerance:
    dtype: str  # fp32 | bf16 | fp16
    fp32_max_abs: float
    margin_ulps: float

    @property
    def strict(self) -> bool:
        return self.dtype == "fp32"

    def eps(self) -> float:
        import torch


        return torch.finfo(torch_dtype(self.dtype)).eps

    def describe(self) -> dict:
        if self.strict:
            return {"max_abs": self.fp32_max_abs, "top1_agreement": 1.0}
        return {"top1_flip_counts_when_margin_above": f"{self.margin_ulps} * {self.eps()} * max|logit| of the row"}

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
    max_abs = (r - g).abs().max().item()
    flips = r.argmax(-1) != g.argmax(-1)
    counted = flips & (top2_margin(r) > tol.margin_bound(r))
    figures = {
        "max_abs_diff": max_abs,
        "top1_agreement": 1.0 - flips.float().mean().item(),
        "positions": int(r.shape[0]),
        "top1_mismatches": int(counted.sum()),
        "near_tie_flips": int((flips & ~counted).sum()),
    }
    ok = figures["top1_mismatches"] == 0 and (not tol.strict or max_abs <= tol.fp32_max_abs)
    return {"passed": ok, **figures}
