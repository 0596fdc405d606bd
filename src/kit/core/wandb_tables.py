"""Per-sample W&B Tables of one eval: each sample's input and target, the checkpoint's completion
and score, and the base's completion and score on the same sample, side by side.

Read from the Inspect logs the eval result names (``eval.logs``, ``eval.base_logs``). A table
holds at most ``SAMPLE_ROWS`` samples per task (the first ones, in the log's order) and texts of at
most ``TEXT_CHARS`` characters; the run's summary says how many samples the task had, so a capped
table is never mistaken for the whole eval.
"""

from __future__ import annotations

from kit.core.inspect_samples import TEXT_CHARS, SampleRow, clip, read_all

SAMPLE_ROWS = 1000  # rows per task and eval (W&B renders tables of this size without paging trouble)


def scorer_names(rows: list[SampleRow]) -> list[str]:
    return sorted({name for r in rows for name in r.scores})


def columns(scorers: list[str]) -> list[str]:
    score = ["score"] if len(scorers) == 1 else [f"score {s}" for s in scorers]
    base = ["base score"] if len(scorers) == 1 else [f"base score {s}" for s in scorers]
    diff = ["score - base"] if len(scorers) == 1 else [f"score - base {s}" for s in scorers]
    return ["id", "epoch", "input", "target", "completion", *score, "base completion", *base, *diff]


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def task_tables(logs: list[str], base_logs: list[str], cap: int = SAMPLE_ROWS) -> dict[str, dict]:
    """{task: {"columns", "data", "samples"}}: one row per sample of the checkpoint's logs (at most
    ``cap``), joined with the base's row of the same (task, sample id, epoch)."""
    mine, base = read_all(logs), read_all(base_logs)
    by_task: dict[str, list[SampleRow]] = {}
    for row in mine.values():
        by_task.setdefault(row.task, []).append(row)
    out = {}
    for task, rows in by_task.items():
        scorers = scorer_names(rows)
        data = []
        for r in rows[:cap]:
            b = base.get(r.key)
            scores = [r.scores.get(s) for s in scorers]
            base_scores = [b.scores.get(s) if b else None for s in scorers]
            data.append(
                [
                    r.id,
                    r.epoch,
                    clip(r.input, TEXT_CHARS),
                    clip(r.target, TEXT_CHARS),
                    clip(r.completion, TEXT_CHARS),
                    *scores,
                    clip(b.completion, TEXT_CHARS) if b else None,
                    *base_scores,
                    *(difference(a, c) for a, c in zip(scores, base_scores)),
                ]
            )
        out[task] = {"columns": columns(scorers), "data": data, "samples": len(rows)}
    return out


def log_sample_tables(run, info: dict | None, cap: int = SAMPLE_ROWS) -> dict:
    """Log ``samples/<task>`` tables into ``run``; returns the summary keys it set."""
    if run is None or not info or not info.get("logs"):
        return {}
    import wandb

    tables = task_tables(list(info["logs"]), list(info.get("base_logs") or []), cap)
    if not tables:
        return {}
    run.log({f"samples/{task}": wandb.Table(columns=t["columns"], data=t["data"]) for task, t in tables.items()})
    summary = {"samples/cap_rows_per_task": cap}
    for task, t in tables.items():
        summary[f"samples/{task}/samples"] = t["samples"]
        summary[f"samples/{task}/rows_logged"] = len(t["data"])
    run.summary.update(summary)
    return summary
