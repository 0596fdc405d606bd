"""Paired tests (kit.core.significance) on constructed per-sample scores, p-values checked by hand."""

import math

import pytest

from kit.core.significance import compare, format_p, mcnemar_exact, paired_bootstrap
from kit.sweep.paired import logged_scores, row_tests


def test_mcnemar_exact_small_cases_by_hand():
    # 5 discordant pairs all one way: 2 * (1/2)^5
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # 8 vs 2: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024)
    # 3 vs 1: 2 * (1 + 4) / 16 = 0.625
    assert mcnemar_exact(3, 1) == pytest.approx(0.625)


def test_mcnemar_exact_balanced_and_empty_are_one():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(4, 4) == 1.0  # 2 * P(X <= 4 | n=8) = 2 * 163/256 > 1, capped
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_compare_exact_match_counts_only_discordant_pairs():
    # 100 samples: A right on 0..59, B right on 0..39 and 60..64
    a = {i: 1.0 if i < 60 else 0.0 for i in range(100)}
    b = {i: 1.0 if i < 40 or 60 <= i < 65 else 0.0 for i in range(100)}
    r = compare(a, b)
    assert (r.test, r.n, r.a_only, r.b_only) == ("mcnemar", 100, 20, 5)
    assert r.diff == pytest.approx(0.15)
    assert r.p == pytest.approx(2 * sum(math.comb(25, k) for k in range(6)) / 2**25)
    assert r.p < 0.01


def test_compare_pairs_by_key_and_ignores_unshared_samples():
    a = {"x": 1, "y": 0, "z": 1}
    b = {"y": 1, "z": 1, "w": 0}
    r = compare(a, b)
    assert (r.n, r.a_only, r.b_only) == (2, 0, 1)
    assert r.p == 1.0
    assert compare({"x": 1}, {"y": 1}) is None


def test_same_scores_are_not_significant():
    a = {i: i % 2 for i in range(50)}
    r = compare(a, dict(a))
    assert (r.a_only, r.b_only, r.p, r.diff) == (0, 0, 1.0, 0.0)


def test_bootstrap_for_non_binary_scores():
    a = {i: 0.5 + 0.01 * i for i in range(40)}
    b = {i: 0.4 + 0.01 * i for i in range(40)}  # A always 0.1 better: interval is exactly (0.1, 0.1)
    r = compare(a, b)
    assert r.test == "bootstrap" and r.diff == pytest.approx(0.1)
    assert r.ci == pytest.approx((0.1, 0.1))
    assert r.p == 0.0
    # pure noise around zero: interval covers 0, p large
    diffs = [(-1) ** i * 0.25 for i in range(40)]  # exact in binary: mean exactly 0
    ci, p = paired_bootstrap([0.5 + d for d in diffs], [0.5] * 40, resamples=2000)
    assert ci[0] < 0 < ci[1] and p == 1.0  # observed mean difference is exactly 0
    ci, p = paired_bootstrap([0.5 + d for d in diffs[:-1]], [0.5] * 39, resamples=2000)
    assert ci[0] < 0 < ci[1] and p > 0.5


def test_bootstrap_is_seeded():
    xs, ys = [0.1, 0.7, 0.3, 0.9, 0.5], [0.2, 0.4, 0.3, 0.6, 0.1]
    assert paired_bootstrap(xs, ys, seed=3) == paired_bootstrap(xs, ys, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


def test_format_p():
    assert format_p(None) == "-"
    assert format_p(0.0004) == "<0.001"
    assert format_p(0.04321) == "0.043"


def test_row_tests_against_base_and_best():
    rows = [
        {"job": 0, "status": "done", "scores": {"t/mean": 0.9}},
        {"job": 1, "status": "done", "scores": {"t/mean": 0.5}},
        {"job": 2, "status": "failed"},
    ]
    base = ({"t": {(str(i), 1): 0.0 for i in range(10)}}, None)
    per_row = {
        0: ({"t": {(str(i), 1): float(i < 9) for i in range(10)}}, None),
        1: ({"t": {(str(i), 1): float(i < 5) for i in range(10)}}, None),
    }
    tests = row_tests(rows, {0: base, 1: base}, per_row, ["t/mean"])
    assert set(tests) == {0, 1}
    assert tests[0]["t/mean"]["vs_base"]["p"] == pytest.approx(2 / 2**9)
    assert "vs_best" not in tests[0]["t/mean"]  # job 0 is the best
    vs_best = tests[1]["t/mean"]["vs_best"]
    assert (vs_best["best_job"], vs_best["a_only"], vs_best["b_only"]) == (0, 0, 4)
    assert vs_best["p"] == pytest.approx(2 / 16)


def test_a_paired_test_that_cannot_run_says_why(tmp_path):
    from kit.sweep.report import paired_cell, skipped_lines

    rows = [{"job": 0, "status": "done", "scores": {"t/mean": 0.9}}]
    gone = str(tmp_path / "base.eval")
    mine = ({"t": {(str(i), 1): 1.0 for i in range(4)}}, None)
    tests = row_tests(rows, {0: logged_scores([gone], "base")}, {0: mine}, ["t/mean"])
    assert tests[0]["t/mean"]["vs_base"] == {"skipped": f"base log {gone} is missing"}
    assert logged_scores([], "base") == ({}, "no base logs recorded")
    no_overlap = ({"t": {("other", 1): 0.0}}, None)
    assert row_tests(rows, {0: no_overlap}, {0: mine}, ["t/mean"])[0]["t/mean"]["vs_base"] == {
        "skipped": "no samples scored by both"
    }
    assert paired_cell(tests[0]["t/mean"]["vs_base"]) == "not run"
    lines = skipped_lines({"jobs": [{**rows[0], "paired": tests[0]}]})
    assert lines[:2] == ["Paired tests not run:", f"- #0 t/mean vs base: not run: base log {gone} is missing"]
