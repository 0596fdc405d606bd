"""kit verify's logit limits (kit/verify/tolerance.py): in fp32 relative to each row's logit scale;
in bf16/fp16 relative to the dtype's rounding of the model itself (the yardstick), by relative
error and KL per position."""

import pytest
import torch

from kit.verify.tolerance import Tolerance, compare_logits, rounding_yardstick

FP32 = Tolerance("fp32", logit_ulps=512, logit_abs_floor=1e-5, margin_ulps=4)
BF16 = Tolerance("bf16", logit_ulps=512, logit_abs_floor=1e-5, margin_ulps=4, rounding_factor=3)


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


def noisy(ref: list, size: float, seed: int) -> list:
    """``ref`` with independent per-logit noise of ``size`` x each row's max|logit| (rounding-like)."""
    g = torch.Generator().manual_seed(seed)
    return [r + torch.randn(r.shape, generator=g) * size * r.abs().amax(-1, keepdim=True) for r in ref]


def test_bf16_rounding_of_the_size_the_yardstick_shows_passes():
    ref = rows(15.0)
    rounding = rounding_yardstick(ref, noisy(ref, 0.01, seed=1), BF16)
    for seed in (2, 3, 4):  # other computations rounding as much, at other places
        f = compare_logits(ref, noisy(ref, 0.01, seed), BF16, rounding)
        assert f["passed"] and f["over_rounding"]["rel_max"] < 1.5, f


def test_bf16_an_error_beyond_the_rounding_fails_though_no_top1_flips():
    """The old rule counted only top-1 flips beyond a margin; a systematic error that flips
    nothing but is 5x the dtype's rounding is a different model."""
    ref = rows(15.0)
    rounding = rounding_yardstick(ref, noisy(ref, 0.01, seed=1), BF16)
    wrong = compare_logits(ref, noisy(ref, 0.05, seed=2), BF16, rounding)
    assert not wrong["passed"] and wrong["over_rounding"]["rel_mean"] > 3
    shifted = [ref[0] + 0.15 * ref[0].abs().amax(-1, keepdim=True) * torch.sign(ref[0])]  # same argmax
    f = compare_logits(ref, shifted, BF16, rounding)
    assert f["top1_agreement"] == 1.0 and not f["passed"], f


def test_bf16_limits_scale_with_the_yardstick_and_have_a_floor():
    ref = rows(15.0)
    got = noisy(ref, 0.01, seed=2)
    tight = rounding_yardstick(ref, noisy(ref, 0.001, seed=1), BF16)
    loose = rounding_yardstick(ref, noisy(ref, 0.01, seed=1), BF16)
    assert not compare_logits(ref, got, BF16, tight)["passed"]
    assert compare_logits(ref, got, BF16, loose)["passed"]
    exact = rounding_yardstick(ref, ref, BF16)  # a yardstick of 0: half a bf16 ulp of the row's max instead
    assert compare_logits(ref, noisy(ref, 0.0005, seed=2), BF16, exact)["passed"]
    assert not compare_logits(ref, got, BF16, exact)["passed"]


def test_bf16_needs_the_yardstick():
    ref = rows(1.0)
    with pytest.raises(ValueError, match="rounding yardstick"):
        compare_logits(ref, ref, BF16)
