"""The sweep summary: one row per job, built from the job dirs' ``summary.json``.

At the end of a multirun (Hydra callback ``SweepReport``) and on demand
(``python -m kit report <sweep_dir>``) kit writes, in the sweep dir:
``sweep_summary.json`` (every figure), ``sweep_summary.md`` (the table, printed too)
and ``sweep_summary.png`` (score against the swept value, storage on a second axis).
The multirun also logs table and plot to W&B as the sweep's own run.

Measured: scores, seconds, checkpoint and job-dir bytes. Estimated: what the other
checkpointer would have stored (kit.train.storage says how, per job).
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.core.significance import format_p
from kit.core.sweepdir import REPORT
from kit.sweep.html import write_page
from kit.sweep.plot import plot
from kit.sweep.rows import build, headline_metrics

FILES = REPORT  # sweep_summary.{json,md,png} and sweep_report.html (kit.core.sweepdir)


# ---------------------------------------------------------------- table


def human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def paired_cell(test: dict | None, best: bool = False) -> str:
    """``p (difference)`` of one paired test; ``best`` for the best row's own vs-best cell."""
    if best:
        return "best"
    if test and "skipped" in test:
        return "not run"  # why: under the table (skipped_lines)
    if not test or "p" not in test:
        return "-"
    return f"{format_p(test['p'])} ({test['diff']:+.2f})"


def paired_cells(row: dict, metric: str) -> list[str]:
    tests = (row.get("paired") or {}).get(metric)
    if tests is None:
        return ["-", "-"]
    return [paired_cell(tests.get("vs_base")), paired_cell(tests.get("vs_best"), best="vs_best" not in tests)]


def paired_heads(metrics: list[str]) -> list[str]:
    prefix = (lambda m: f"{m.rpartition('/')[0]} ") if len(metrics) > 1 else (lambda m: "")
    return [h for m in metrics for h in (f"{prefix(m)}vs base: p", f"{prefix(m)}vs best: p")]


def table(summary: dict) -> str:
    rows, keys = summary["jobs"], summary["swept"]
    metrics = headline_metrics(rows)
    head = [
        "#",
        *keys,
        "status",
        "verify",
        *metrics,
        *(f"base {m}" for m in metrics),
        *paired_heads(metrics),
        "checkpoint",
        "checkpoint bytes",
        "other checkpointer (est.)",
        "job dir bytes",
        "train s",
        "eval s",
    ]
    body = []
    for r in rows:
        values = dict(o.partition("=")[::2] for o in r["overrides"])
        other = f"{r['other_kind']} {human_bytes(r['other_checkpoint_bytes'])}" if r.get("other_kind") else "-"
        body.append(
            [
                str(r["job"]),
                *(values.get(k, "-") for k in keys),
                r["status"],
                r.get("verify") or "-",
                *(fmt((r.get("scores") or {}).get(m)) for m in metrics),
                *(fmt((r.get("base_scores") or {}).get(m)) for m in metrics),
                *(c for m in metrics for c in paired_cells(r, m)),
                r.get("checkpoint_kind") or "-",
                human_bytes(r.get("checkpoint_bytes")),
                other,
                human_bytes(r.get("persistent_bytes")),
                fmt(r.get("train_s")),
                fmt(r.get("eval_s")),
            ]
        )
    if any(r.get("compress") for r in rows):  # phase=compress: the size/quality columns
        head += COMPRESS_HEAD
        for r, cells in zip(rows, body):
            cells += compress_cells(r.get("compress") or {})
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return "\n".join([line(head), line(["---"] * len(head)), *map(line, body)])


COMPRESS_HEAD = ["compressed bytes", "zstd bytes", "x smaller", "KL", "ppl source", "ppl compressed", "load s"]


def compress_cells(c: dict) -> list[str]:
    sizes = [human_bytes(c.get("bytes")), human_bytes(c.get("zstd_bytes"))]
    kl = "-" if c.get("kl") is None else f"{c['kl']:.3g}"  # int8's KL is far below 0.001
    return [*sizes, fmt(c.get("ratio")), kl, *(fmt(c.get(k)) for k in ("ppl_source", "ppl_compressed", "load_s"))]


def storage_lines(summary: dict) -> list[str]:
    t = summary["totals"]
    lines = [f"Stored by the {t['done']} finished job(s): {human_bytes(t['persistent_bytes'])} (measured: the whole job dirs)."]
    if t["other_persistent_bytes"]:
        lines.append(
            f"With the other checkpointer they would store {human_bytes(t['other_persistent_bytes'])} "
            "(estimated; see 'other checkpointer')."
        )
    if t["full_vs_adapter"]:
        lines.append(
            f"Full model vs adapter checkpoints: {human_bytes(t['full_checkpoint_bytes'])} vs "
            f"{human_bytes(t['adapter_checkpoint_bytes'])} = {t['full_vs_adapter']:.1f}x "
            "(each job's own kind measured, the other estimated)."
        )
    hows = sorted({r["other_how"] for r in summary["jobs"] if r.get("other_how")})
    lines += [f"Other checkpointer, {h}." for h in hows]
    return lines


def paired_lines(summary: dict) -> list[str]:
    """How to read the 'vs base' / 'vs best' columns (only when there are any)."""
    tests = [
        t
        for r in summary["jobs"]
        for m in (r.get("paired") or {}).values()
        for t in m.values()
        if isinstance(t, dict) and "test" in t
    ]
    if not tests:
        return []
    kinds = sorted({t["test"] for t in tests})
    how = {
        "mcnemar": "McNemar's exact test on the per-sample exact-match scores",
        "bootstrap": "a paired bootstrap of the per-sample score differences (10,000 resamples)",
    }
    return [
        f"vs base / vs best: two-sided p-value that the row and the base (or the sweep's best row) score "
        f"the same on the same {max(t['n'] for t in tests)} samples ({'; '.join(how[k] for k in kinds)}), "
        "and in brackets the row's mean minus theirs; p < 0.05: a difference beyond noise.",
        "",
    ]


def verified_line(summary: dict) -> str:
    """``Verified: 3 of 4 jobs (1 FAILED, 0 not run)``: verify decides whether a score is a result."""
    t, rows = summary["totals"], summary["jobs"]
    failed = sum(1 for r in rows if str(r.get("verify", "")).startswith("FAILED"))
    not_run = sum(1 for r in rows if r.get("verify") in (None, "not run"))
    return f"Verified: {t['verified']} of {t['jobs']} jobs ({failed} FAILED, {not_run} not run)."


def skipped_lines(summary: dict) -> list[str]:
    """Each paired test that could not run, and why (never a silent blank)."""
    lines = [
        f"- #{r['job']} {metric} {which.replace('_', ' ')}: not run: {test['skipped']}"
        for r in summary["jobs"]
        for metric, tests in (r.get("paired") or {}).items()
        for which, test in tests.items()
        if isinstance(test, dict) and "skipped" in test
    ]
    return ["Paired tests not run:", *lines, ""] if lines else []


def markdown(summary: dict) -> str:
    failures = [
        f"- #{r['job']} {' '.join(r['overrides'])}: {r['status']}: {r['error']}" for r in summary["jobs"] if r["status"] != "done"
    ]
    parts = [f"# Sweep {summary['group']}", "", table(summary), "", verified_line(summary), "", *paired_lines(summary)]
    parts += skipped_lines(summary) + storage_lines(summary)
    if failures:
        parts += ["", "Not done:", *failures]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- plot


# ---------------------------------------------------------------- write, W&B, entry points


def write(sweep_dir: Path, live: dict[int, str] | None = None) -> dict:
    summary = build(sweep_dir, live)
    md = markdown(summary)
    (sweep_dir / FILES[0]).write_text(json.dumps(summary, indent=2))
    (sweep_dir / FILES[1]).write_text(md)
    if any(r["status"] == "done" for r in summary["jobs"]):
        plot(summary, sweep_dir / FILES[2])
    write_html(sweep_dir, summary)
    print(md)
    return summary


def write_html(sweep_dir: Path, summary: dict) -> Path:
    """The page a browser opens with no W&B and no server (kit.sweep.html)."""
    notes = [verified_line(summary), "", *paired_lines(summary), *storage_lines(summary)]
    return write_page(sweep_dir, summary, table(summary), notes, sweep_dir / FILES[2])
