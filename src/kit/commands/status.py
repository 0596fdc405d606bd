"""``python -m kit status <sweep_dir> [--rerun-failed]`` and ``python -m kit collect <sweep_dir>``.

A sweep submitted with ``launcher.detach=true`` runs on the cluster without its submitter.
Its manifest (``<sweep>/manifest.json``, kit.sweep.launchers) names every job; ``status``
joins it with each job's ``summary.json`` and what SLURM says now into one table;
``--rerun-failed`` submits the sweep command again, which skips the done jobs and the ones
SLURM still holds and resubmits the failed and lost ones. ``collect`` builds the sweep
summary, plot and W&B sweep run from whatever has finished; run it again any time.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from kit.core.cli_parser import OneLineParser
from kit.core.errors import KitError
from kit.core.jobdir import read_summary
from kit.core.locks import locked
from kit.core.sweepdir import MANIFEST, read_manifest
from kit.sweep.launchers import LAUNCHERS
from kit.sweep.report import write
from kit.sweep.rows import build
from kit.sweep.slurm_client import WHY, slurm_details
from kit.sweep.wandb_run import log_to_wandb

WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING"}
NOT_DONE = ("failed", "lost", "unverified")  # what --rerun-failed resubmits
LOG_CHARS = 70
# Logger prefixes (Hydra/torchtune "[time][name][LEVEL] - ", submitit "submitit INFO (time) - "): the message is what counts
LOG_PREFIX = re.compile(r"^(\[[^\]]*\]){2,3} - |^submitit \w+ \([^)]*\) - ")


def job_state(entry: dict, summary: dict | None, slurm: dict | None) -> tuple[str, str]:
    """(state, why) of one job: done / unverified / pending / running / preempted / failed / lost."""
    status = (summary or {}).get("status")
    if status == "done":
        return "done", ""
    if status == "unverified":  # trained and scored, but verify failed: not a result
        return "unverified", (summary or {}).get("error") or "verify failed"
    if not slurm:
        return "lost", "never submitted"
    state, restarts = slurm["state"], slurm.get("restarts", 0)
    if state == "PREEMPTED" or (state in WAITING and restarts):
        return "preempted", f"requeued ({restarts} restart(s)), waiting to run again"
    if state in WAITING:
        return "pending", slurm.get("reason") or ""
    if state in RUNNING:
        return "running", f"restart {restarts}" if restarts else ""
    if state == "UNKNOWN":  # never resubmitted on a guess: it may still be running
        return "unknown", "SLURM did not answer; ask again"
    if state == "GONE":
        return "lost", "no longer known to SLURM and no result"
    if state == "COMPLETED":  # ended and wrote no done summary: the job itself failed
        return "failed", (summary or {}).get("error") or "completed without a result"
    return "failed", WHY.get(state, f"ended in state {state}")


def last_log_line(entry: dict) -> str:
    """The newest non-empty line of the job's SLURM logs (stdout or stderr, whichever changed last)."""
    logs = [Path(entry[k]) for k in ("stdout", "stderr") if entry.get(k) and Path(entry[k]).is_file()]
    for path in sorted(logs, key=lambda p: p.stat().st_mtime, reverse=True):
        text = path.read_text(errors="replace").replace("\r", "\n")  # progress bars redraw with \r
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            line = LOG_PREFIX.sub("", "".join(c if c.isprintable() else " " for c in lines[-1]))
            return line if len(line) <= LOG_CHARS else line[: LOG_CHARS - 3] + "..."
    return ""


def tracked_by(manifest: dict) -> str:
    """How this sweep's jobs are followed: the launcher's registry entry says (kit.sweep.launchers)."""
    entry = LAUNCHERS.get(manifest.get("launcher") or f"submitit_{manifest.get('executor')}")
    return entry.tracks if entry is not None else "summaries"


def in_process_manifest(sweep_dir: Path) -> dict:
    """What a sweep run in-process (``hydra/launcher=basic``: no manifest, nothing submitted) is made
    of: its points (Hydra's multirun.yaml) and the job dirs' summaries."""
    try:
        built = build(sweep_dir)
    except KitError:
        read_manifest(sweep_dir)  # neither a manifest nor a multirun: the manifest's own one-line error
        raise
    jobs = {}
    for r in built["jobs"]:
        summary = read_summary(Path(r["job_dir"])) or {}
        jobs[str(r["job"])] = {
            "num": r["job"],
            "overrides": r["overrides"],
            "job_dir": r["job_dir"],
            "run_id": summary.get("run_id") or "-",
        }
    return {"executor": "basic", "launcher": "basic", "command": None, "jobs": jobs}


def rows(sweep_dir: Path) -> tuple[dict, list[dict]]:
    manifest = read_manifest(sweep_dir) if (sweep_dir / MANIFEST).is_file() else in_process_manifest(sweep_dir)
    entries = sorted(manifest["jobs"].values(), key=lambda e: e["num"])
    on_slurm = tracked_by(manifest) == "slurm"
    details = slurm_details([e["slurm_id"] for e in entries if e.get("slurm_id")]) if on_slurm else {}
    # the point column shows what differs between jobs
    common = set.intersection(*(set(e["overrides"]) for e in entries)) if len(entries) > 1 else set()
    out = []
    for e in entries:
        summary = read_summary(Path(e["job_dir"]))
        slurm = details.get(e.get("slurm_id"))
        if on_slurm:
            state, why = job_state(e, summary, slurm)
        else:  # local processes of an attached sweep: their summary is all there is
            state, why = (summary or {}).get("status") or "pending", (summary or {}).get("error") or ""
        point = " ".join(o for o in e["overrides"] if o not in common) or "-"
        out.append(
            {
                "job": e["num"],
                "overrides": point,
                "run_id": e["run_id"],
                "slurm_id": e.get("slurm_id") or "-",
                "state": state,
                "why": why,
                "elapsed": (slurm or {}).get("elapsed") or "-",
                "log": last_log_line(e),
            }
        )
    return manifest, out


def table(found: list[dict]) -> str:
    head = ["#", "point", "run id", "slurm job", "state", "elapsed", "note", "last log line"]
    body = [
        [
            str(r["job"]),
            r["overrides"],
            r["run_id"],
            r["slurm_id"],
            r["state"],
            r["elapsed"],
            r["why"] or "-",
            r["log"].replace("|", "/") or "-",
        ]
        for r in found
    ]
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return "\n".join([line(head), line(["---"] * len(head)), *map(line, body)])


def rerun(manifest: dict, found: list[dict]) -> int:
    """The sweep command again, detached: done and queued jobs are skipped, the rest resubmitted."""
    bad = [r for r in found if r["state"] in NOT_DONE]
    if not bad:
        print("kit: no failed or lost jobs; nothing to resubmit")
        return 0
    if manifest.get("command") is None:  # an in-process sweep: only its own command line can resume it
        print(
            f"kit: error: {len(bad)} job(s) not done in an in-process sweep; run the sweep command again with "
            "the same hydra.sweep.dir (done jobs are kept, the others run again)",
            file=sys.stderr,
        )
        return 2
    command = [a for a in manifest["command"] if not a.startswith("launcher.detach=")] + ["launcher.detach=true"]
    print(f"kit: resubmitting {len(bad)} job(s): {', '.join('#' + str(r['job']) for r in bad)}", flush=True)
    return subprocess.run([sys.executable, "-m", "kit", *command], cwd=manifest["cwd"]).returncode


def main(argv: list[str]) -> int:
    """``python -m kit status <sweep_dir> [--rerun-failed]``: each job's state, from the manifest and SLURM."""
    parser = OneLineParser(prog="kit status", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the hydra.sweep.dir of a sweep (any launcher)")
    parser.add_argument("--rerun-failed", action="store_true", help="resubmit the failed and lost jobs")
    args = parser.parse_args(argv)
    manifest, found = rows(args.sweep_dir.absolute())
    print(table(found))
    counts = {s: sum(r["state"] == s for r in found) for s in dict.fromkeys(r["state"] for r in found)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return rerun(manifest, found) if args.rerun_failed else 0


def sweep_run_id(sweep_dir: Path) -> str:
    """One W&B sweep run per sweep dir, however often it is collected."""
    return "sweep-" + hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:16]


def collect(argv: list[str]) -> int:
    """``python -m kit collect <sweep_dir>``: sweep summary, plot and W&B sweep run from the jobs done so far."""
    parser = OneLineParser(prog="kit collect", description=collect.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the hydra.sweep.dir of a sweep")
    sweep_dir = parser.parse_args(argv).sweep_dir.absolute()
    manifest, found = rows(sweep_dir)
    live = {r["job"]: r["state"] for r in found if r["state"] in ("pending", "running", "preempted")}
    with locked(sweep_dir, "sweep dir"):  # one writer per sweep dir: refuses while a sweep or collect holds it
        summary = write(sweep_dir, live)
        if manifest.get("logger"):  # an in-process sweep logged its own sweep run when it ended
            log_to_wandb(OmegaConf.create(manifest["logger"]), sweep_dir, summary, sweep_run_id(sweep_dir))
    if live:
        print(f"kit: {len(live)} job(s) not finished yet; run kit collect {sweep_dir} again later")
    failed = [f"#{r['job']} {r['overrides']}: {r['why']}" for r in found if r["state"] in NOT_DONE]
    if failed:
        print(
            f"kit: error: {len(failed)} of {len(found)} jobs failed or lost: {'; '.join(failed)}; "
            f"resubmit them: python -m kit status {sweep_dir} --rerun-failed",
            file=sys.stderr,
        )
        return 1
    return 0
