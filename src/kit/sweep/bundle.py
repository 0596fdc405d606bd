"""Inspect's static log viewer for a whole sweep (``inspect view bundle``), written beside the
sweep page by ``kit report <sweep> --html``: every finished job's logs and the base's, one folder
per job, in ``<sweep>/inspect_bundle/``. About 12 MB of viewer assets plus the logs; it reads the
logs over HTTP, so serve the sweep dir (``python -m http.server``) or copy it to any static host.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from kit.sweep.html import BUNDLE


def logs_by_folder(summary: dict) -> dict[str, list[str]]:
    """{folder in the bundle: log files}: ``job-<n>`` per finished job, ``base`` for the base's."""
    done = [r for r in summary["jobs"] if r["status"] == "done"]
    out = {f"job-{r['job']}": [p for p in r.get("logs") or [] if Path(p).is_file()] for r in done}
    out["base"] = sorted({p for r in done for p in r.get("base_logs") or [] if Path(p).is_file()})
    return {k: v for k, v in out.items() if v}


def write_bundle(sweep_dir: Path, summary: dict) -> Path | None:
    """``<sweep>/inspect_bundle/`` (replaced when there); None when no finished job has a log."""
    from inspect_ai.log import bundle_log_dir

    folders = logs_by_folder(summary)
    if not folders:
        return None
    out = sweep_dir / BUNDLE
    with tempfile.TemporaryDirectory(prefix="kit-bundle-") as tmp:
        for name, paths in folders.items():
            (Path(tmp) / name).mkdir()
            for path in paths:
                shutil.copy2(path, Path(tmp) / name / Path(path).name)
        staged = sweep_dir / f".{BUNDLE}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()):  # Inspect's progress lines name the staging folder
            bundle_log_dir(log_dir=tmp, output_dir=str(staged))
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    return out
