"""Samples x sweep points: every sample's score (and completion) at every finished point and the
base's, the data the paired tests are computed from, for the W&B sweep table and the sweep page.

Capped at ``SAMPLE_ROWS`` samples (the first ones, in the order the logs hold them) and
``TEXT_CHARS`` characters per text; the result says how many samples there were in all.
"""

from __future__ import annotations

from kit.core.inspect_samples import SampleRow, clip, read_all

SAMPLE_ROWS = 1000  # samples (rows) of the sweep's table and page
TEXT_CHARS = 500  # per input, target and completion (the per-job tables keep 2000)


def point_label(row: dict, swept: list[str]) -> str:
    values = dict(o.partition("=")[::2] for o in row["overrides"])
    own = ",".join(f"{k}={values[k]}" for k in swept if k in values)
    return f"#{row['job']}" + (f" {own}" if own else "")


def base_groups(done: list[dict]) -> dict[str, dict]:
    """Each base model of the sweep -> the base logs to read (the first job's: parallel jobs may each
    have scored the same base) and the jobs on it. One group unless the base was swept."""
    groups: dict[str, dict] = {}
    for r in done:
        group = groups.setdefault(str(r.get("base_model") or sorted(r.get("base_logs") or [])), {"logs": [], "jobs": []})
        group["jobs"].append(r["job"])
        group["logs"] = group["logs"] or list(r.get("base_logs") or [])
    return groups


def score_of(row: SampleRow | None) -> float | None:
    """The sample's score: its one scorer's value (several scorers: the first by name)."""
    if row is None or not row.scores:
        return None
    return row.scores[sorted(row.scores)[0]]


def points_by_sample(summary: dict, cap: int = SAMPLE_ROWS) -> dict:
    """{"points": [{"id", "label", "job"}], "samples": [{"task", "id", "epoch", "input", "target",
    "cells": {point id: [completion, score]}}], "total": samples in all, "cap": cap}. Point ids:
    the job number as a string, ``base`` (or ``base #n`` per base when the base was swept)."""
    done = [r for r in summary["jobs"] if r["status"] == "done" and r.get("logs")]
    points, per_point = [], {}
    groups = base_groups(done)
    for group in groups.values():
        if group["logs"]:
            jobs = group["jobs"]
            pid = "base" if len(groups) == 1 else f"base #{jobs[0]}"
            points.append({"id": pid, "label": pid if len(groups) == 1 else f"base of {', '.join(f'#{j}' for j in jobs)}"})
            per_point[pid] = read_all(group["logs"])
    for r in done:
        pid = str(r["job"])
        points.append({"id": pid, "label": point_label(r, summary["swept"]), "job": r["job"]})
        per_point[pid] = read_all(r["logs"])
    order: dict[tuple, SampleRow] = {}
    for rows in per_point.values():
        for key, row in rows.items():
            order.setdefault(key, row)
    samples = []
    for key, first in list(order.items())[:cap]:
        cells = {}
        for pid, rows in per_point.items():
            row = rows.get(key)
            if row is not None:
                cells[pid] = [clip(row.completion, TEXT_CHARS), score_of(row)]
        samples.append(
            {
                "task": first.task,
                "id": first.id,
                "epoch": first.epoch,
                "input": clip(first.input, TEXT_CHARS),
                "target": clip(first.target, TEXT_CHARS),
                "cells": cells,
            }
        )
    return {"points": points, "samples": samples, "total": len(order), "cap": cap}


def table_columns_and_rows(data: dict) -> tuple[list[str], list[list]]:
    """The samples x points data as one flat table: a score and a completion column per point."""
    columns = ["task", "id", "epoch", "input", "target"]
    for p in data["points"]:
        columns += [f"{p['label']} score", f"{p['label']} completion"]
    rows = []
    for s in data["samples"]:
        row = [s["task"], s["id"], s["epoch"], s["input"], s["target"]]
        for p in data["points"]:
            completion, score = s["cells"].get(p["id"], [None, None])
            row += [score, completion]
        rows.append(row)
    return columns, rows
