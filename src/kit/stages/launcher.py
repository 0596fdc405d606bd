"""Config group ``hydra/launcher``: kit's ``basic``, ``submitit_local`` and ``submitit_slurm``.

They are Hydra's launchers (conf/hydra/launcher/*.yaml name them through
``hydra_plugins/kit_launcher``, where Hydra requires launcher classes to live) with
what a sweep needs on a cluster:

- resume: a job whose ``summary.json`` says done is not launched again (Hydra would
  rewrite its ``.hydra/`` files); an unfinished attempt is moved to ``<job>/attempts/<n>/``
  and the job runs again.
- every job is awaited and a failure is returned, not raised, so the other jobs finish
  and the sweep summary (kit.stages.sweep) lists them all, then ends the sweep with an error.
- no hang on hard crashes: job states are polled every ``POLL_S`` seconds (sacct, or
  scontrol where accounting is off), so a job killed, out of memory or past its time
  limit ends the wait with its SLURM state named.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_launcher import (
    BasicLauncher as HydraBasicLauncher,
)
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import open_dict

from kit.core import jobdir
from kit.core.config import redact_overrides, redact_yaml_files
from kit.core.errors import KitError
from kit.core.locks import hold

POLL_S = 5.0  # how often job states are read; bounds how late a hard crash is seen
RESULT_GRACE_S = 15.0  # a finished job's result file can show up late on a network file system
RUNNING_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING",
                  "SUSPENDED", "PREEMPTED", "UNKNOWN", "READY"}
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


@dataclass
class Point:
    """One sweep point: its job number, overrides, composed config and job dir."""

    num: int
    overrides: list[str]
    config: Any
    job_dir: Path

    @property
    def shown(self) -> list[str]:
        """The overrides as printed and saved: secrets redacted."""
        return redact_overrides(self.overrides)


def plan(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Point]:
    points = []
    for i, overrides in enumerate(job_overrides):
        num = initial_job_idx + i
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        points.append(Point(num, list(overrides), cfg, job_dir.absolute()))
    return points


FAILURES: list[int] = []  # job numbers this process reported failed: the sweep then exits non-zero


def open_sweep(config) -> Path:
    """The sweep dir, locked for this process (one sweep per dir; the second refuses in one line
    naming the holder), with the ``multirun.yaml`` Hydra just wrote stripped of secrets."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    try:
        hold(sweep_dir, "sweep dir")
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    redact_yaml_files([sweep_dir / "multirun.yaml"])
    return sweep_dir


def returned(point: Point, value: dict) -> JobReturn:
    return JobReturn(overrides=point.overrides, working_dir=str(point.job_dir),
                     status=JobStatus.COMPLETED, _return_value=value)


def failed(point: Point, error: str) -> JobReturn:
    """The job failed: say so now (one line) and in its summary.json (never a finished one's)."""
    print(f"kit: job #{point.num} ({' '.join(point.shown)}) failed: {error}", file=sys.stderr)
    FAILURES.append(point.num)
    jobdir.mark_failed(point.job_dir, point.shown, error)
    return returned(point, {"status": "failed", "job_dir": str(point.job_dir), "error": error})


def resume(point: Point) -> JobReturn | None:
    """A JobReturn when the point needs no run (done before), else None (after setting aside
    an unfinished attempt)."""
    summary = jobdir.read_summary(point.job_dir)
    if jobdir.is_done(point.job_dir):
        if set(summary.get("overrides", [])) != set(point.shown):
            return failed(point, (
                f"job dir {str(point.job_dir)!r} holds a finished run of {summary.get('overrides')}, "
                "not this point; expected the same sweep command (or a new hydra.sweep.dir)"))
        print(jobdir.skip_message(point.job_dir))
        return returned(point, {"status": "done", "job_dir": str(point.job_dir), "skipped": True})
    moved = jobdir.set_aside(point.job_dir)
    if moved:
        print(f"kit: job #{point.num}: unfinished attempt moved to {moved}; running it again")
    return None


def as_reported(point: Point, ret: JobReturn) -> JobReturn:
    """A job that raised becomes a failed JobReturn, so the sweep goes on to its summary."""
    if ret.status == JobStatus.COMPLETED:
        return ret
    return failed(point, one_line(ret._return_value))


def one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


class BasicLauncher(HydraBasicLauncher):
    """In-process, one job after another (Hydra's default launcher)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        open_sweep(self.config)
        results = []
        for point in plan(self, job_overrides, initial_job_idx):
            skipped = resume(point)
            if skipped:
                results.append(skipped)
                continue
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                          config=point.config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            results.append(as_reported(point, ret))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # the front's logging again
        return results


class SubmititLauncher(BaseSubmititLauncher):
    """Submits the points that need a run as one submitit job array, then awaits them all."""

    def executor(self):
        """submitit's executor with this config's settings, built as hydra-submitit-launcher does."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        init = {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the rest take the executor's prefix
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        open_sweep(self.config)
        points = plan(self, job_overrides, initial_job_idx)
        results = {p.num: resume(p) for p in points}
        to_run = [p for p in points if results[p.num] is None]
        if to_run:
            args = [(p.overrides, "hydra.sweep.dir", p.num, f"job_id_for_{p.num}", Singleton.get_state())
                    for p in to_run]
            jobs = self.executor().map_array(self, *zip(*args))
            for p, j in zip(to_run, jobs):
                print(f"kit: job #{p.num} ({' '.join(p.shown)}) submitted as {self._EXECUTOR} job {j.job_id}")
            results.update(self.await_all(to_run, jobs))
        return [results[p.num] for p in points]

    def await_all(self, points: list[Point], jobs: list) -> dict[int, JobReturn]:
        """Poll every job until each has a result or has ended without one."""
        pending = dict(zip((p.num for p in points), zip(points, jobs)))
        out = {}
        while pending:
            states = self.states([j for _, j in pending.values()])
            for num, (point, job) in list(pending.items()):
                ret = self.outcome(point, job, states.get(job.job_id, "UNKNOWN"))
                if ret is not None:
                    out[num] = ret
                    del pending[num]
            if pending:
                time.sleep(POLL_S)
        return out

    def states(self, jobs: list) -> dict[str, str]:
        return {j.job_id: j.state.upper() for j in jobs}

    def outcome(self, point: Point, job, state: str) -> JobReturn | None:
        """The job's JobReturn once it has ended, else None."""
        if job.paths.result_pickle.exists():
            return self.result(point, job)
        if state in RUNNING_STATES:
            return None
        deadline = time.time() + RESULT_GRACE_S
        while state == "COMPLETED" and time.time() < deadline and not job.paths.result_pickle.exists():
            time.sleep(1)
        if job.paths.result_pickle.exists():
            return self.result(point, job)
        why = WHY.get(state.split()[0], f"ended in state {state} without a result")
        return failed(point, f"{self._EXECUTOR} job {job.job_id} {why}; log: {job.paths.stderr}")

    def result(self, point: Point, job) -> JobReturn:
        try:
            return as_reported(point, job.results()[0])
        except Exception as e:  # the job raised outside Hydra's run_job (e.g. unpickling)
            return failed(point, f"{one_line(e)}; log: {job.paths.stderr}")


class LocalLauncher(SubmititLauncher):
    """Local processes (submitit's local executor): same sweep, no cluster."""

    _EXECUTOR = "local"


class SlurmLauncher(SubmititLauncher):
    """A SLURM job array; site settings (partition, account, gpus, setup lines) in its config."""

    _EXECUTOR = "slurm"

    def states(self, jobs: list) -> dict[str, str]:
        return slurm_states([j.job_id for j in jobs])


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (``123`` or array task ``123_4``): sacct, or scontrol when the
    cluster keeps no accounting (sacct then fails; scontrol knows jobs for MinJobAge)."""
    masters = sorted({i.split("_")[0] for i in job_ids})
    sacct = subprocess.run(["sacct", "-o", "JobID,State", "--parsable2", "-X", "-j", ",".join(masters)],
                           capture_output=True, text=True)
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
