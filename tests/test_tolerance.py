"""kit verify's logit tolerance is relative to each row's logit scale and to the dtype
(kit/verify/tolerance.py): real models' logits are large, and so is their fp32 rounding."""

import torch

from kit.verify.tolerance import Tolerance, compare_logits

FP32 = Tolerance("fp32", logit_ulps=512, logit_abs_floor=1e-5, margin_ulps=4)


def rows(scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 6, 50, generator=g) * scale]


def test_rounding_sized_differences_pass_at_any_logit_scale():
    for scale in (0.01, 1.0, 40.0):
        ref = rows(scale)
        eps_noise = [r * (1 + 50 * torch.finfo(torch.float32).eps) for r in ref]  # ~50 ulps per logit
        f = compare_logits(ref, eps_noise, FP32)
        assert f["passed"] and f["diff_over_limit"] < 1, (scale, f)


def test_a_real_models_fp32_path_difference_passes_where_the_old_absolute_limit_failed():
    """SmolLM2 measured: unmerged vs merged max|diff| 2.8e-4 at max|logit| 40 (old fixed limit: 1e-4)."""
    ref = rows(10.0)
    ref[0][0, 0, 0] = 40.0
    got = [ref[0].clone()]
    got[0][0, 0, 1] += 2.8e-4
    f = compare_logits(ref, got, FP32)
    assert f["passed"] and f["max_abs_diff"] > 1e-4


def test_an_error_beyond_rounding_fails_and_flips_count_in_fp32():
    ref = rows(40.0)
    got = [ref[0] * 1.001]  # a 0.1 % change: ~8000 ulps
    f = compare_logits(ref, got, FP32)
    assert not f["passed"] and f["diff_over_limit"] > 10
    tiny = rows(0.01)
    bumped = [tiny[0].clone()]
    bumped[0][0, 0, 0] += 1e-3  # 100x the floor on a small-logit row
    assert not compare_logits(tiny, bumped, FP32)["passed"]


def test_the_limit_scales_with_the_dtype():
    bf16 = Tolerance("bf16", logit_ulps=512, logit_abs_floor=1e-5, margin_ulps=4)
    ref = rows(40.0)[0].reshape(-1, 50)
    assert (bf16.row_limit(ref) / FP32.row_limit(ref)).min() > 1000  # eps 2**-7 vs 2**-23
