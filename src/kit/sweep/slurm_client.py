"""A small SLURM client: job states and details from sacct / scontrol (accounting may be off), and the
states a launcher or `kit status` reads from them."""

from __future__ import annotations

import subprocess

POLL_S = 5.0  # how often job states are read; bounds how late a hard crash is seen
RESULT_GRACE_S = 15.0  # a finished job's result file can show up late on a network file system
RUNNING_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "PREEMPTED",
    "UNKNOWN",
    "READY",
}
WHY = {  # SLURM end states that leave no result, and what the user can do about them
    "CANCELLED": "cancelled (scancel, or killed by the cluster)",
    "OUT_OF_MEMORY": "ran out of memory (raise hydra.launcher.mem_gb)",
    "TIMEOUT": "hit its time limit (raise hydra.launcher.timeout_min)",
    "NODE_FAIL": "lost its node",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "missed its deadline",
    "FAILED": "exited non-zero without a result",
    "GONE": "is no longer known to SLURM",
}


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (``123`` or array task ``123_4``): sacct, or scontrol when the
    cluster keeps no accounting (sacct then fails; scontrol knows jobs for MinJobAge)."""
    masters = sorted({i.split("_")[0] for i in job_ids})
    sacct = subprocess.run(
        ["sacct", "-o", "JobID,State", "--parsable2", "-X", "-j", ",".join(masters)], capture_output=True, text=True
    )
    states = {}
    if sacct.returncode == 0:
        for line in sacct.stdout.splitlines()[1:]:
            job_id, _, state = line.partition("|")
            states[job_id] = state.split()[0] if state else "UNKNOWN"
    else:
        for master in masters:
            states.update(scontrol_states(master, [i for i in job_ids if i.split("_")[0] == master]))
    return {i: states.get(i, "UNKNOWN") for i in job_ids}


def scontrol_states(master: str, job_ids: list[str]) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "-o", "show", "job", master], capture_output=True, text=True)
    if proc.returncode != 0:  # purged after MinJobAge: gone; anything else (controller busy): ask again
        return {i: "GONE" for i in job_ids} if "Invalid job id" in proc.stderr else {}
    states = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        state, task = fields.get("JobState", "UNKNOWN"), fields.get("ArrayTaskId", "")
        states[fields.get("JobId")] = state
        if task.isdigit():  # an array task: submitit calls it <array job id>_<task>
            states[f"{fields['ArrayJobId']}_{task}"] = state
    return states


def slurm_details(job_ids: list[str]) -> dict[str, dict]:
    """State, elapsed time and restart count of each job, for ``kit status``: scontrol
    (knows jobs for MinJobAge), else sacct (accounting keeps them longer)."""
    out: dict[str, dict] = {}
    unanswered = set()  # the controller did not answer (down, busy): unknown, never "gone"
    for master in sorted({i.split("_")[0] for i in job_ids}):
        proc = subprocess.run(["scontrol", "-o", "show", "job", master], capture_output=True, text=True)
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            unanswered.add(master)
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            f = dict(x.split("=", 1) for x in line.split() if "=" in x)
            task = f.get("ArrayTaskId", "")
            key = f"{f['ArrayJobId']}_{task}" if task.isdigit() else f.get("JobId")
            out[key] = {
                "state": f.get("JobState", "UNKNOWN"),
                "elapsed": f.get("RunTime"),
                "restarts": int(f.get("Restarts", "0") or 0),
                "reason": f.get("Reason"),
            }
    missing = [i for i in job_ids if i not in out]
    if missing:
        sacct = subprocess.run(
            [
                "sacct",
                "-o",
                "JobID,State,Elapsed",
                "--parsable2",
                "-X",
                "-j",
                ",".join(sorted({i.split("_")[0] for i in missing})),
            ],
            capture_output=True,
            text=True,
        )
        for line in sacct.stdout.splitlines()[1:] if sacct.returncode == 0 else []:
            job_id, state, elapsed = (line.split("|") + ["", ""])[:3]
            out.setdefault(job_id, {"state": (state.split() or ["UNKNOWN"])[0], "elapsed": elapsed, "restarts": 0})
    gone = {"state": "GONE", "elapsed": None, "restarts": 0}
    unknown = {"state": "UNKNOWN", "elapsed": None, "restarts": 0}
    return {i: out.get(i, unknown if i.split("_")[0] in unanswered else gone) for i in job_ids}
