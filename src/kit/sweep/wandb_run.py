"""The sweep as its own W&B run (job_type ``sweep``), laid out to be read at once:

- ``sweep/table``: the sweep summary's table, as printed;
- ``sweep/points``: one row per finished job, its verify result, each swept key its own column (numbers where they
  are numbers), each score, the base's, the paired test against the base, bytes and seconds: ready
  for a parallel-coordinates or scatter panel over the sweep;
- ``sweep/score_vs_<key>/<metric>`` (and ``sweep/storage_vs_<key>``): a chart of each score
  against each swept key (a line for numbers such as ranks, bars otherwise);
- ``sweep/samples``: samples x points, each sample's score and completion at every point and the
  base's: what the paired tests are computed from (capped: kit.sweep.samples);
- the plot, the paired tests' p-values in the summary, the swept keys and each point's values in
  the run's config (``swept``, ``points``).

W&B builds its own parallel-coordinates and parameter-importance panels only for runs started by
``wandb agent``; these tables and charts travel in the offline run files and appear after
``wandb sync`` without a server-side workspace.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.wandb_logger import phase_run
from kit.sweep.report import FILES, table
from kit.sweep.rows import headline_metrics
from kit.sweep.samples import points_by_sample, table_columns_and_rows


def log_to_wandb(logger_cfg, sweep_dir: Path, summary: dict, run_id: str | None = None) -> None:
    """The sweep summary as its own W&B run in the sweep's group (job_type ``sweep``); with a
    ``run_id`` (``kit collect``) every collect updates the same run."""

    config = {
        "sweep_dir": str(sweep_dir),
        "swept": summary["swept"],
        "jobs": len(summary["jobs"]),
        "points": {str(r["job"]): point_values(r, summary["swept"]) for r in summary["jobs"]},
    }
    with phase_run(logger_cfg, sweep_dir, "sweep", summary["group"], summary["group"], config, run_id) as run:
        if run is None:
            return
        import wandb

        lines = table(summary).splitlines()
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        logged = {"sweep/table": wandb.Table(columns=cells[0], data=cells[2:])}
        if (sweep_dir / FILES[2]).exists():
            logged["sweep/plot"] = wandb.Image(str(sweep_dir / FILES[2]))
        columns, data = points_table(summary)
        if data:
            logged["sweep/points"] = wandb.Table(columns=columns, data=data)
            logged.update(charts(summary, columns, data))
        samples = points_by_sample(summary)
        if samples["samples"]:
            logged["sweep/samples"] = wandb.Table(*table_columns_and_rows(samples))
        run.log(logged)
        run.summary.update({f"sweep/{k}": v for k, v in summary["totals"].items() if v is not None})
        run.summary.update(paired_summary(summary))
        run.summary.update({"sweep/samples_total": samples["total"], "sweep/samples_cap_rows": samples["cap"]})


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


def number_or_text(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def point_values(row: dict, swept: list[str]) -> dict:
    """The job's value of each swept key, as a number where it is one."""
    values = dict(o.partition("=")[::2] for o in row["overrides"])
    return {k: number_or_text(values[k]) for k in swept if k in values}


def points_table(summary: dict) -> tuple[list[str], list[list]]:
    """(columns, rows) of the finished jobs: the job, its verify result, each swept key, each headline score, its base
    score, the paired test against the base (p, difference), storage and seconds."""
    rows = [r for r in summary["jobs"] if r["status"] == "done"]
    keys, metrics = summary["swept"], headline_metrics(rows)
    columns = [
        "job",
        "verify",  # passed / FAILED / not run: whether the point's score is a result
        *keys,
        *metrics,
        *(f"base {m}" for m in metrics),
        *(c for m in metrics for c in (f"p vs base {m}", f"diff vs base {m}")),
        "checkpoint_bytes",
        "persistent_bytes",
        "train_s",
        "eval_s",
    ]
    data = []
    for r in rows:
        values = point_values(r, keys)
        tests = [((r.get("paired") or {}).get(m) or {}).get("vs_base") or {} for m in metrics]
        data.append(
            [
                r["job"],
                str(r.get("verify") or "not run"),
                *(values.get(k) for k in keys),
                *((r.get("scores") or {}).get(m) for m in metrics),
                *((r.get("base_scores") or {}).get(m) for m in metrics),
                *(v for t in tests for v in (t.get("p"), t.get("diff"))),
                r.get("checkpoint_bytes"),
                r.get("persistent_bytes"),
                r.get("train_s"),
                r.get("eval_s"),
            ]
        )
    return columns, data


def charts(summary: dict, columns: list[str], data: list[list]) -> dict:
    """W&B charts that appear in the sweep run's workspace as logged: each score against each swept
    key (a line for numbers such as ranks, bars otherwise) and the checkpoint bytes against it."""
    import wandb

    keys = summary["swept"] or ["job"]
    metrics = headline_metrics([r for r in summary["jobs"] if r["status"] == "done"])
    out = {}
    for key in keys:
        at = columns.index(key)
        numeric = all(isinstance(row[at], (int, float)) for row in data)
        # the key first, then the figures (the job and the other keys are the points table's)
        keep = [i for i, c in enumerate(columns) if c not in ("job", "verify", *keys)]
        cols = [key, *(columns[i] for i in keep)]
        rows = [[row[at] if numeric else str(row[at]), *(row[i] for i in keep)] for row in data]  # bars: text labels
        plot = wandb.plot.line if numeric else wandb.plot.bar
        source = wandb.Table(columns=cols, data=rows)
        for metric in metrics:
            out[f"sweep/score_vs_{key}/{metric}"] = plot(source, key, metric, title=f"{metric} vs {key}")
        out[f"sweep/storage_vs_{key}"] = plot(source, key, "checkpoint_bytes", title=f"checkpoint bytes vs {key}")
    return out
