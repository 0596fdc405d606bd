"""The sweep plot: score (with its stderr, and the base's) against the swept value, checkpoint bytes on a second axis."""

from __future__ import annotations

from pathlib import Path

from kit.sweep.rows import headline_metrics


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
