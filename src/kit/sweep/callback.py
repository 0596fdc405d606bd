"""The Hydra callback that writes the sweep summary at the end of every multirun."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from kit.core.sweepdir import LAUNCH, read_launch
from kit.sweep.report import FILES, write
from kit.sweep.wandb_run import log_to_wandb


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
        failed = sorted(n for n, o in read_launch(sweep_dir).items() if o.get("status") not in ("done", "submitted"))
        if failed:  # the launcher saw a failure although every summary reads done: never exit 0 then
            print(
                f"kit: error: job(s) {failed} failed during this sweep (see above; {sweep_dir / LAUNCH}); "
                f"their summaries in {sweep_dir} read done",
                file=sys.stderr,
            )
            raise SystemExit(1)
