"""Per-sample scores from Inspect logs, and the paired tests of a sweep's rows.

Each job's ``summary.json`` names its Inspect logs (``eval.logs``) and its copy of the
base's (``eval.base_logs``, in the job's ``inspect_logs/base/``); every log holds one score
per sample. A sweep row is compared with its own base and with the sweep's best row on the
same samples (kit.core.significance). A test that cannot run is never left out silently:
its entry says why (``skipped``), and the table and summary show it.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.significance import Paired, compare
from kit.eval.samples import SampleScores, sample_scores


def logged_scores(paths: list[str], whose: str) -> tuple[SampleScores, str | None]:
    """Per-sample scores of the logs, or ({}, why there are none)."""
    if not paths:
        return {}, f"no {whose} logs recorded"
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        return {}, f"{whose} log {missing[0]} is missing"
    scores = sample_scores(paths)
    if not scores:
        return {}, f"{whose} logs ({paths[0]}) hold no readable per-sample scores"
    return scores, None


def test_or_reason(a: dict, b: dict, why_not: str | None) -> dict:
    if why_not is not None:
        return {"skipped": why_not}
    return as_dict(compare(a, b)) or {"skipped": "no samples scored by both"}


def row_tests(
    rows: list[dict],
    bases: dict[int, tuple[SampleScores, str | None]],
    per_row: dict[int, tuple[SampleScores, str | None]],
    metrics: list[str],
) -> dict[int, dict[str, dict]]:
    """For each row (by job number) and headline metric ``<key>/mean``: the paired test against
    the row's base (``vs_base``) and against the best done row on that metric (``vs_best``).
    ``bases`` / ``per_row``: each row's per-sample scores and why they are missing (None: not)."""
    out: dict[int, dict[str, dict]] = {}
    for metric in metrics:
        key = metric.rpartition("/")[0]
        done = [r for r in rows if r["status"] == "done" and (r.get("scores") or {}).get(metric) is not None]
        best = max(done, key=lambda r: r["scores"][metric], default=None)
        for r in done:
            mine, mine_missing = per_row.get(r["job"], ({}, "no logs recorded"))
            base, base_missing = bases.get(r["job"], ({}, "no base logs recorded"))
            entry = {"vs_base": test_or_reason(mine.get(key, {}), base.get(key, {}), mine_missing or base_missing)}
            if best is not None and r is not best:
                theirs, theirs_missing = per_row.get(best["job"], ({}, "no logs recorded"))
                entry["vs_best"] = {
                    **test_or_reason(mine.get(key, {}), theirs.get(key, {}), mine_missing or theirs_missing),
                    "best_job": best["job"],
                }
            out.setdefault(r["job"], {})[metric] = entry
    return out


def as_dict(result: Paired | None) -> dict | None:
    if result is None:
        return None
    d = {k: v for k, v in vars(result).items() if v is not None}
    if "ci" in d:
        d["ci"] = list(d["ci"])
    return d
