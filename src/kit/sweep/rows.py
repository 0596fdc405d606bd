"""One row per job of a sweep, built from the job dirs' summary.json, with its paired tests."""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.core.jobdir import UNREADABLE, point_overrides, read_summary
from kit.core.overrides import expand
from kit.sweep.paired import logged_scores, row_tests


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of every run of a sweep: ``<name>-<timestamp>``."""
    return f"{sweep_dir.parent.name}-{sweep_dir.name}"


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
        verify=verify_cell(s.get("verify")),
        logs=in_job((s.get("eval") or {}).get("logs") or [], s.get("job_dir"), job_dir),
        base_logs=in_job((s.get("eval") or {}).get("base_logs") or [], s.get("job_dir"), job_dir),
        compress=compress_cell(s.get("compress")),
        base_model=s.get("base_model"),
    )
    if row["persistent_bytes"] is not None and row["other_checkpoint_bytes"] is not None:
        row["other_persistent_bytes"] = row["persistent_bytes"] - row["checkpoint_bytes"] + row["other_checkpoint_bytes"]
    return row


COMPRESS_FIELDS = ("format", "bytes", "zstd_bytes", "ratio", "kl", "ppl_source", "ppl_compressed", "load_s")


def compress_cell(entry: dict | None) -> dict | None:
    """phase=compress: the size/quality figures of the compressed base (None for other phases)."""
    return {k: entry.get(k) for k in COMPRESS_FIELDS} if entry else None


def verify_cell(entry: dict | None) -> str:
    """``passed`` / ``FAILED [checks]`` / ``not run``: what the job's verify said (verify decides)."""
    if not entry:
        return "not run"
    return "passed" if entry.get("passed") else f"FAILED {entry.get('failed') or []}"


def in_job(paths: list[str], recorded: str | None, job_dir: Path) -> list[str]:
    """Logs the summary names inside the job dir it recorded, found in the job dir as it is now
    (a sweep dir moved or copied since still reads its own logs)."""
    if not recorded:
        return list(paths)
    out = []
    for p in paths:
        try:
            out.append(str(job_dir / Path(p).relative_to(recorded)))
        except ValueError:  # outside the job (an older kit's cached base logs): as recorded
            out.append(p)
    return out


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
    for r in done:  # full and adapter checkpoints only (a modifier registry is neither)
        if r["checkpoint_kind"] in kind_bytes:
            kind_bytes[r["checkpoint_kind"]] += r["checkpoint_bytes"] or 0
        if r.get("other_kind") in kind_bytes:
            kind_bytes[r["other_kind"]] += r["other_checkpoint_bytes"] or 0
    return {
        "jobs": len(rows),
        "done": len(done),
        "failed": len(rows) - len(done),
        "verified": sum(1 for r in rows if r.get("verify") == "passed"),
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
    """``paired`` per done row: each headline metric's paired test against the row's base and
    against the sweep's best row, on the per-sample scores of their Inspect logs
    (kit.sweep.paired); a test that cannot run says why (``skipped``)."""
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return
    bases = {r["job"]: logged_scores(r.get("base_logs") or [], "base") for r in done}
    per_row = {r["job"]: logged_scores(r.get("logs") or [], "the job's") for r in done}
    for job, tests in row_tests(rows, bases, per_row, headline_metrics(rows)).items():
        next(r for r in rows if r["job"] == job)["paired"] = tests


def headline_metrics(rows: list[dict]) -> list[str]:
    """The score columns of table and plot: every task metric but the standard errors."""
    return sorted({m for r in rows for m in r.get("scores") or {} if not m.endswith("stderr")})
