"""End of a multirun: one table of every job (override values, score, adapter
bytes, train seconds), printed and written to the sweep dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback


def job_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(sweep_dir.glob("*/summary.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        s = json.loads(path.read_text())
        scores = s.get("scores") or {}
        task = next(iter(scores), None)
        metric = next(iter(scores[task]), None) if task else None
        rows.append({
            "job": path.parent.name,
            "overrides": " ".join(o for o in s.get("overrides", []) if not o.startswith("+experiment")),
            "status": s.get("status"),
            "score": scores[task][metric] if metric else None,
            "base_score": ((s.get("base_scores") or {}).get(task) or {}).get(metric) if metric else None,
            "metric": f"{task}/{metric}" if metric else None,
            "checkpoint_bytes": (s.get("checkpoint") or {}).get("bytes"),
            "train_s": (s.get("timings") or {}).get("train_s"),
        })
    return rows


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(rows: list[dict]) -> str:
    cols = ["job", "overrides", "status", "metric", "score", "base_score", "checkpoint_bytes", "train_s"]
    body = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(x.ljust(w) for x, w in zip(cells, widths)) + " |"
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


class SweepReport(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_rows(sweep_dir)
        text = table(rows)
        (sweep_dir / "sweep_table.md").write_text(text + "\n")
        (sweep_dir / "sweep_table.json").write_text(json.dumps(rows, indent=2))
        print(text)
        failed = [r["job"] for r in rows if r["status"] != "done"]
        if failed:
            print(f"kit: error: {len(failed)} job(s) failed: {failed} in {sweep_dir}", file=sys.stderr)
            raise SystemExit(1)
