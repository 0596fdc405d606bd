"""The sweep as its own W&B run: the table, the plot, charts of score against the swept value, the paired tests."""

from __future__ import annotations

from pathlib import Path

from kit.core.wandb_logger import phase_run
from kit.sweep.report import FILES, table
from kit.sweep.rows import headline_metrics


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
