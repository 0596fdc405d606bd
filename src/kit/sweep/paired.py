"""Per-sample scores from Inspect logs, and the paired tests of a sweep's rows.

Each job's ``summary.json`` names its Inspect logs (``eval.logs``) and the base's
(``eval.base_logs``); every log holds one score per sample. A sweep row is compared
with the base and with the sweep's best row on the same samples (kit.core.significance).
"""

from __future__ import annotations

from kit.core.significance import Paired, compare
from kit.eval.samples import SampleScores


def row_tests(
    rows: list[dict], base: SampleScores, per_row: dict[int, SampleScores], metrics: list[str]
) -> dict[int, dict[str, dict]]:
    """For each row (by job number) and headline metric ``<key>/mean``: the paired test against
    the base (``vs_base``) and against the best done row on that metric (``vs_best``)."""
    out: dict[int, dict[str, dict]] = {}
    for metric in metrics:
        key = metric.rpartition("/")[0]
        done = [r for r in rows if r["status"] == "done" and (r.get("scores") or {}).get(metric) is not None]
        best = max(done, key=lambda r: r["scores"][metric], default=None)
        for r in done:
            mine = per_row.get(r["job"], {}).get(key, {})
            entry = {"vs_base": as_dict(compare(mine, base.get(key, {})))}
            if best is not None and r is not best:
                entry["vs_best"] = {
                    **(as_dict(compare(mine, per_row.get(best["job"], {}).get(key, {}))) or {}),
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
