"""The sweep summary: one row per job, built from the job dirs' ``summary.json``.

At the end of a multirun (Hydra callback ``SweepReport``) and on demand
(``python -m kit report <sweep_dir>``) kit writes, in the sweep dir:
``sweep_summary.json`` (every figure), ``sweep_summary.md`` (the table, printed too)
and ``sweep_summary.png`` (score against the swept value, storage on a second axis).
The multirun also logs table and plot to W&B as the sweep's own run.

Measured: scores, seconds, checkpoint and job-dir bytes. Estimated: what the other
checkpointer would have stored (kit.stages.storage says how, per job).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from kit.core.errors import KitError
from kit.core.jobdir import UNREADABLE, point_overrides, read_summary
from kit.core.paired import format_p
from kit.core.wandb_logger import phase_run
from kit.stages.launcher import FAILURES
from kit.stages.paired import row_tests, sample_scores
from kit.stages.preflight import expand

FILES = ("sweep_summary.json", "sweep_summary.md", "sweep_summary.png")


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of every run of a sweep: ``<name>-<timestamp>``."""
    return f"{sweep_dir.parent.name}-{sweep_dir.name}"


# ---------------------------------------------------------------- rows from job dirs


def expected_points(sweep_dir: Path) -> list[list[str]]:
    """The sweep's points in job-number order, from the ``multirun.yaml`` Hydra wrote."""
    from omegaconf import OmegaConf

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    hydra = OmegaConf.load(path).hydra
    params = OmegaConf.to_container(hydra.sweeper.params) if hydra.sweeper.params else {}
    return expand(list(hydra.overrides.task), {k: str(v) for k, v in params.items()})


def job_dirs(sweep_dir: Path, count: int) -> dict[int, Path]:
    found = {int(p.parent.name): p.parent for p in sweep_dir.glob("*/summary.json") if p.parent.name.isdigit()}
    return {**{n: sweep_dir / str(n) for n in range(count)}, **found}


def job_row(num: int, job_dir: Path, expected: list[str] | None) -> dict:

    s = read_summary(job_dir) if (job_dir / "summary.json").exists() else None
    if s is None:
        return {
            "job": num,
            "job_dir": str(job_dir),
            "overrides": expected or [],
            "status": "missing",
            "error": "no summary.json (never started, or its dir was removed)",
        }
    row = {
        "job": num,
        "job_dir": str(job_dir),
        "overrides": s.get("overrides", []),
        "status": s.get("status"),
        "error": s.get("error"),
    }
    if row["status"] == "running":  # killed before it could say so, and not seen by a launcher
        row.update(status="failed", error="ended while running (killed?); no result")
    if row["status"] == UNREADABLE:  # named as it is: a damaged file, not another sweep's run
        row["overrides"] = expected or []
    elif expected is not None and set(point_overrides(expected)) != set(point_overrides(row["overrides"])):
        row.update(status="mismatch", error=f"holds {row['overrides']}, the sweep's point is {expected}")
    scores = {f"{t}/{m}": v for t, ms in (s.get("scores") or {}).items() for m, v in ms.items()}
    base = {f"{t}/{m}": v for t, ms in (s.get("base_scores") or {}).items() for m, v in ms.items()}
    storage, checkpoint = s.get("storage") or {}, s.get("checkpoint") or {}
    estimate = storage.get("estimate") or {}
    row.update(
        scores=scores,
        base_scores=base,
        checkpoint_kind=checkpoint.get("kind"),
        checkpoint_bytes=checkpoint.get("bytes"),
        persistent_bytes=storage.get("persistent_bytes"),
        other_kind=estimate.get("kind"),
        other_checkpoint_bytes=estimate.get("checkpoint_bytes"),
        other_how=estimate.get("how"),
        train_s=(s.get("timings") or {}).get("train_s"),
        eval_s=(s.get("timings") or {}).get("eval_s"),
        logs=(s.get("eval") or {}).get("logs") or [],
        base_logs=(s.get("eval") or {}).get("base_logs") or [],
    )
    if row["persistent_bytes"] is not None and row["other_checkpoint_bytes"] is not None:
        row["other_persistent_bytes"] = row["persistent_bytes"] - row["checkpoint_bytes"] + row["other_checkpoint_bytes"]
    return row


def swept(rows: list[dict]) -> list[str]:
    """The override keys whose values differ between jobs (all keys when only one job)."""
    values: dict[str, set] = {}
    for r in rows:
        for o in r["overrides"]:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or len(rows) == 1]
    return [k for k in keys if not k.startswith("+experiment")]


def totals(rows: list[dict]) -> dict:
    """Bytes of the whole sweep as run (measured) and with the other checkpointer (estimated),
    and the full-vs-adapter checkpoint ratio (measured where a job used that kind)."""
    done = [r for r in rows if r["status"] == "done"]
    kind_bytes = {"full": 0, "adapter": 0}
    for r in done:
        kind_bytes[r["checkpoint_kind"]] += r["checkpoint_bytes"] or 0
        if r.get("other_kind"):
            kind_bytes[r["other_kind"]] += r["other_checkpoint_bytes"] or 0
    return {
        "jobs": len(rows),
        "done": len(done),
        "failed": len(rows) - len(done),
        "persistent_bytes": sum(r["persistent_bytes"] or 0 for r in done),
        "other_persistent_bytes": sum(r.get("other_persistent_bytes") or 0 for r in done),
        "full_checkpoint_bytes": kind_bytes["full"],
        "adapter_checkpoint_bytes": kind_bytes["adapter"],
        "full_vs_adapter": kind_bytes["full"] / kind_bytes["adapter"] if kind_bytes["adapter"] else None,
    }


def build(sweep_dir: Path, live: dict[int, str] | None = None) -> dict:
    """``live``: jobs still queued or running on the cluster (a detached sweep), {job number: state}."""
    points = expected_points(sweep_dir)
    dirs = job_dirs(sweep_dir, len(points))
    if not dirs:
        raise KitError(
            f"{str(sweep_dir)!r} holds no job dirs (<n>/summary.json) and no multirun.yaml; "
            "expected the hydra.sweep.dir of a kit multirun"
        )
    rows = [job_row(n, d, points[n] if n < len(points) else None) for n, d in sorted(dirs.items())]
    for r in rows:
        if r["job"] in (live or {}) and r["status"] != "done":  # not failed: not finished yet
            r.update(status=live[r["job"]], error="not finished yet (kit status)")
    add_paired_tests(rows)
    return {
        "sweep_dir": str(sweep_dir),
        "group": sweep_group(sweep_dir),
        "swept": swept(rows),
        "jobs": rows,
        "totals": totals(rows),
    }


def add_paired_tests(rows: list[dict]) -> None:
    """``paired`` per done row: each headline metric's paired test against the base and against
    the sweep's best row, on the per-sample scores of their Inspect logs (kit.stages.paired)."""
    done = [r for r in rows if r["status"] == "done"]
    base_logs = sorted({p for r in done for p in r.get("base_logs") or []})
    if not done:
        return
    base = sample_scores(base_logs)
    per_row = {r["job"]: sample_scores(r.get("logs") or []) for r in done}
    for job, tests in row_tests(rows, base, per_row, headline_metrics(rows)).items():
        next(r for r in rows if r["job"] == job)["paired"] = tests


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
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return "\n".join([line(head), line(["---"] * len(head)), *map(line, body)])


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


def markdown(summary: dict) -> str:
    failures = [
        f"- #{r['job']} {' '.join(r['overrides'])}: {r['status']}: {r['error']}" for r in summary["jobs"] if r["status"] != "done"
    ]
    parts = [f"# Sweep {summary['group']}", "", table(summary), "", *paired_lines(summary), *storage_lines(summary)]
    if failures:
        parts += ["", "Not done:", *failures]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- plot


def headline_metrics(rows: list[dict]) -> list[str]:
    """The score columns of table and plot: every task metric but the standard errors."""
    return sorted({m for r in rows for m in r.get("scores") or {} if not m.endswith("stderr")})


def plot(summary: dict, path: Path) -> None:
    """Score (with its stderr, and the base's) against the swept value; checkpoint bytes on
    a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["jobs"] if r["status"] == "done"]
    key = summary["swept"][0] if len(summary["swept"]) == 1 else None
    labels = [
        dict(o.partition("=")[::2] for o in r["overrides"]).get(key)
        if key
        else ",".join(o for o in r["overrides"] if o.partition("=")[0] in summary["swept"]) or f"#{r['job']}"
        for r in rows
    ]
    try:
        xs = [float(v) for v in labels]
    except (TypeError, ValueError):
        xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(7, 4))
    if key and xs and min(xs) > 0 and max(xs) >= 4 * min(xs):  # ranks 8..64: even spacing
        ax.set_xscale("log", base=2)
    for metric in headline_metrics(rows):
        task = metric.rpartition("/")[0]
        err = [r["scores"].get(f"{task}/stderr") for r in rows]
        ax.errorbar(
            xs, [r["scores"].get(metric) for r in rows], yerr=None if None in err else err, fmt="o-", capsize=3, label=metric
        )
        base = rows[0]["base_scores"].get(metric)
        if base is not None:
            ax.axhline(base, linestyle=":", color="gray", label=f"base {metric}")
    ax.set_xlabel(key or "job")
    ax.set_ylabel("score")
    ax.set_ylim(bottom=0)
    ax.set_xticks(xs, labels)
    ax.minorticks_off()
    storage_ax = ax.twinx()
    storage_ax.plot(xs, [(r["checkpoint_bytes"] or 0) / 1e6 for r in rows], "s--", color="tab:red", label="checkpoint MB")
    storage_ax.set_ylabel("checkpoint MB (measured)", color="tab:red")
    storage_ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = storage_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize="small")
    ax.set_title(summary["group"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- write, W&B, entry points


def write(sweep_dir: Path, live: dict[int, str] | None = None) -> dict:
    summary = build(sweep_dir, live)
    md = markdown(summary)
    (sweep_dir / FILES[0]).write_text(json.dumps(summary, indent=2))
    (sweep_dir / FILES[1]).write_text(md)
    if any(r["status"] == "done" for r in summary["jobs"]):
        plot(summary, sweep_dir / FILES[2])
    print(md)
    return summary


def log_to_wandb(logger_cfg, sweep_dir: Path, summary: dict, run_id: str | None = None) -> None:
    """The sweep summary as its own W&B run in the sweep's group (job_type ``sweep``); with a
    ``run_id`` (``kit collect``) every collect updates the same run."""

    config = {"sweep_dir": str(sweep_dir), "swept": summary["swept"], "jobs": len(summary["jobs"])}
    with phase_run(logger_cfg, sweep_dir, "sweep", summary["group"], summary["group"], config, run_id) as run:
        if run is None:
            return
        import wandb

        lines = table(summary).splitlines()
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        logged = {"sweep/table": wandb.Table(columns=cells[0], data=cells[2:])}
        if (sweep_dir / FILES[2]).exists():
            logged["sweep/plot"] = wandb.Image(str(sweep_dir / FILES[2]))
        logged.update(charts(summary))
        run.log(logged)
        run.summary.update({f"sweep/{k}": v for k, v in summary["totals"].items() if v is not None})
        run.summary.update(paired_summary(summary))


def paired_summary(summary: dict) -> dict:
    """W&B summary keys of the paired tests: ``sweep/paired/<job>/<metric>/{p_vs_base,diff_vs_base,p_vs_best}``."""
    out = {}
    for r in summary["jobs"]:
        for metric, tests in (r.get("paired") or {}).items():
            for which in ("vs_base", "vs_best"):
                test = tests.get(which) or {}
                if "p" in test:
                    out[f"sweep/paired/{r['job']}/{metric}/p_{which}"] = test["p"]
                    out[f"sweep/paired/{r['job']}/{metric}/diff_{which}"] = test["diff"]
    return out


def chart_rows(summary: dict) -> tuple[str | None, list[str], list[list]]:
    """(swept key, columns, rows) of the finished jobs: the swept value, each headline score, its base
    score and the storage figures, as numbers where they are numbers."""
    rows = [r for r in summary["jobs"] if r["status"] == "done"]
    key = summary["swept"][0] if summary["swept"] else None
    metrics = headline_metrics(rows)
    columns = [key or "job", *metrics, *(f"base {m}" for m in metrics), "checkpoint_bytes", "persistent_bytes"]
    data = []
    for r in rows:
        value = dict(o.partition("=")[::2] for o in r["overrides"]).get(key) if key else r["job"]
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass
        data.append(
            [
                value,
                *((r.get("scores") or {}).get(m) for m in metrics),
                *((r.get("base_scores") or {}).get(m) for m in metrics),
                r.get("checkpoint_bytes"),
                r.get("persistent_bytes"),
            ]
        )
    return key, columns, data


def charts(summary: dict) -> dict:
    """W&B charts that appear in the sweep run's workspace as logged: each score against the swept
    value (a line for numbers such as ranks, bars otherwise) and the checkpoint bytes against it."""
    import wandb

    key, columns, data = chart_rows(summary)
    if not data:
        return {}
    x = columns[0]
    table = wandb.Table(columns=columns, data=data)
    numeric = all(isinstance(row[0], float) for row in data)
    plot = wandb.plot.line if numeric else wandb.plot.bar
    out = {}
    for metric in headline_metrics([r for r in summary["jobs"] if r["status"] == "done"]):
        out[f"sweep/score_vs_{x}/{metric}"] = plot(table, x, metric, title=f"{metric} vs {x}")
    out[f"sweep/storage_vs_{x}"] = plot(table, x, "checkpoint_bytes", title=f"checkpoint bytes vs {x}")
    return out


def failure_line(summary: dict) -> str | None:
    bad = [r for r in summary["jobs"] if r["status"] != "done"]
    if not bad:
        return None
    named = "; ".join(f"#{r['job']} {' '.join(r['overrides'])}: {r['error']}" for r in bad)
    return f"{len(bad)} of {len(summary['jobs'])} jobs not done: {named} (the others' results: {summary['sweep_dir']}/{FILES[1]})"


class SweepReport(Callback):
    """Hydra callback: the sweep summary at the end of every multirun."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        if config.launcher.detach:  # the jobs run on; `kit collect` builds the summary
            return
        try:
            summary = write(sweep_dir)
            log_to_wandb(config.logger, sweep_dir, summary)
        except Exception as e:  # Hydra would turn it into a warning and exit 0
            print(f"kit: error: the sweep summary of {sweep_dir} failed: {type(e).__name__}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        line = failure_line(summary)
        if line:
            print(f"kit: error: {line}", file=sys.stderr)
            raise SystemExit(1)
        if FAILURES:  # a failure was printed although every summary reads done: never exit 0 then
            print(
                f"kit: error: job(s) {sorted(set(FAILURES))} failed during this sweep (see above); "
                f"their summaries in {sweep_dir} read done",
                file=sys.stderr,
            )
            raise SystemExit(1)
