"""Per-sample scores read back from Inspect logs."""

from __future__ import annotations

from pathlib import Path

SampleScores = dict[str, dict[tuple, float]]  # score key (as in summary scores) -> {(sample id, epoch): value}


def sample_scores(paths: list[str]) -> SampleScores:
    """Per-sample scores of the logs that exist (a missing or unreadable log is skipped:
    the comparison then says '-', the rest of the report stands)."""
    from inspect_ai.log import read_eval_log
    from inspect_ai.scorer import value_to_float

    to_float = value_to_float()
    out: SampleScores = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        try:
            log = read_eval_log(str(path))
        except Exception:  # a truncated or foreign file: no per-sample data from it
            continue
        task = log.eval.task.split("/")[-1]
        for sample in log.samples or []:
            scores = sample.scores or {}
            for name, score in scores.items():
                key = task if len(scores) == 1 else f"{task}/{name}"
                try:
                    value = to_float(score.value)
                except (TypeError, ValueError):  # dict-valued scores: not one number per sample
                    continue
                out.setdefault(key, {})[(str(sample.id), sample.epoch)] = value
    return out
