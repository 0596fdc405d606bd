"""Per-sample scores read back from Inspect logs (the paired tests' input)."""

from __future__ import annotations

from kit.core.inspect_samples import read_samples

SampleScores = dict[str, dict[tuple, float]]  # score key (as in summary scores) -> {(sample id, epoch): value}


def sample_scores(paths: list[str]) -> SampleScores:
    """Per-sample scores of the logs that exist (a missing or unreadable log is skipped:
    the comparison then says '-', the rest of the report stands)."""
    out: SampleScores = {}
    for path in paths:
        for row in read_samples(path):
            for name, value in row.scores.items():
                if value is not None:
                    out.setdefault(row.score_key(name), {})[(row.id, row.epoch)] = value
    return out
