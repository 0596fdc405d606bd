"""Paired significance tests on per-sample scores of two models on the same samples.

Every point of a sweep (and the base) is scored on the same held-out samples, so
two of them can be compared sample by sample, which is far more sensitive than
comparing two means with their standard errors:

- exact-match scores (every value 0 or 1): McNemar's exact test, a two-sided
  binomial test on the discordant pairs (samples one model gets right and the
  other wrong);
- any other scores: a paired bootstrap of the mean difference (percentile
  interval, and a two-sided p from how often the resampled difference crosses 0).

Pure functions, no kit or third-party imports: the sweep report reads the
per-sample scores from the Inspect logs (kit.sweep.paired) and calls these.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    """One comparison of model A against model B on ``n`` shared samples."""

    test: str  # "mcnemar" or "bootstrap"
    n: int  # samples both models were scored on
    diff: float  # mean(A) - mean(B) over those samples
    p: float  # two-sided p-value of "no difference"
    a_only: int | None = None  # McNemar: samples A got right and B wrong
    b_only: int | None = None  # McNemar: samples B got right and A wrong
    ci: tuple[float, float] | None = None  # bootstrap: 95% interval of diff


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: P(a binomial(n, 1/2) count is at least as far from n/2
    as the observed split), n = a_only + b_only discordant pairs. 1.0 when n = 0."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only} and {b_only}")
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def is_binary(values: list[float]) -> bool:
    return all(v in (0, 1) for v in values)


def paired_bootstrap(
    a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[tuple[float, float], float]:
    """Percentile interval of mean(a - b) over ``resamples`` resamplings of the samples
    (with replacement, pairs kept together), and a two-sided p: twice the share of
    resampled differences on the far side of 0 from the observed one (at most 1)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if not diffs:
        raise ValueError("no paired samples to compare")
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low = means[int((1 - level) / 2 * resamples)]
    high = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    observed = sum(diffs) / n
    if observed == 0:
        return (low, high), 1.0
    far = sum(1 for m in means if (m <= 0 if observed > 0 else m >= 0))
    return (low, high), min(1.0, 2 * far / resamples)


def compare(a: dict, b: dict, **bootstrap) -> Paired | None:
    """Compare per-sample scores ``{sample_key: value}`` of A and B on their shared samples;
    None when they share none."""
    keys = sorted(set(a) & set(b), key=str)
    if not keys:
        return None
    xs, ys = [float(a[k]) for k in keys], [float(b[k]) for k in keys]
    diff = (sum(xs) - sum(ys)) / len(keys)
    if is_binary(xs) and is_binary(ys):
        a_only = sum(1 for x, y in zip(xs, ys) if x > y)
        b_only = sum(1 for x, y in zip(xs, ys) if y > x)
        return Paired("mcnemar", len(keys), diff, mcnemar_exact(a_only, b_only), a_only, b_only)
    ci, p = paired_bootstrap(xs, ys, **bootstrap)
    return Paired("bootstrap", len(keys), diff, p, ci=ci)


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
