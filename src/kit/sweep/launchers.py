"""Config group ``hydra/launcher``: kit's ``basic``, ``submitit_local`` and ``submitit_slurm``.

They are Hydra's launchers (conf/hydra/launcher/*.yaml name them through
``hydra_plugins/kit_launcher``, where Hydra requires launcher classes to live) with
what a sweep needs on a cluster:

- resume: a job whose ``summary.json`` says done is not launched again (Hydra would
  rewrite its ``.hydra/`` files); an unfinished attempt is moved to ``<job>/attempts/<n>/``
  and the job runs again.
- every job is awaited and a failure is returned, not raised, so the other jobs finish
  and the sweep summary (kit.sweep.report) lists them all, then ends the sweep with an error.
- no hang on hard crashes: job states are polled every ``POLL_S`` seconds (sacct, or
  scontrol where accounting is off), so a job killed, out of memory or past its time
  limit ends the wait with its SLURM state named.
- a sweep manifest (``<sweep>/manifest.json``: each point's run id, job dir, SLURM ids and
  log files) is written at submission, so ``kit status`` / ``kit collect`` work without
  the submitter; with ``launcher.detach=true`` the submitter exits right there.
- requeue (SLURM preemption signal, ``scontrol requeue``): the job starts again in the same
  job dir under the same run id, the interrupted attempt set aside (torchtune 0.6.1 saves
  its recipe state only at epoch ends, so a clean restart is the only state never stale).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import (
    BasicLauncher as HydraBasicLauncher,
)
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import OmegaConf, open_dict

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from kit.core import identity, jobdir
from kit.core.config import redact_overrides, redact_yaml_files
from kit.core.errors import KitError
from kit.core.locks import hold
from kit.core.log import get as get_logger
from kit.sweep.slurm import slurm_states

log = get_logger(__name__)
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


@dataclass
class Point:
    """One sweep point: its job number, overrides, composed config and job dir."""

    num: int
    overrides: list[str]
    config: Any
    job_dir: Path

    @property
    def run_id(self) -> str:
        """The run id the job itself will compute (kit.core.identity) from this config minus Hydra's keys."""
        HydraConfig.instance().set_config(self.config)  # for ${hydra:...} interpolations
        return identity.run_id(self.config)

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
    return JobReturn(overrides=point.overrides, working_dir=str(point.job_dir), status=JobStatus.COMPLETED, _return_value=value)


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
        if set(jobdir.point_overrides(summary.get("overrides", []))) != set(jobdir.point_overrides(point.shown)):
            return failed(
                point,
                (
                    f"job dir {str(point.job_dir)!r} holds a finished run of {summary.get('overrides')}, "
                    "not this point; expected the same sweep command (or a new hydra.sweep.dir)"
                ),
            )
        print(jobdir.skip_message(point.job_dir))
        return returned(point, {"status": "done", "job_dir": str(point.job_dir), "skipped": True})
    moved = jobdir.set_aside(point.job_dir)
    if moved:
        log.info("job #%d: unfinished attempt moved to %s; running it again", point.num, moved)
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
        points = plan(self, job_overrides, initial_job_idx)
        for k, point in enumerate(points, 1):
            skipped = resume(point)
            if skipped:
                results.append(skipped)
                continue
            log.info("job %d of %d (#%d %s) started: %s", k, len(points), point.num, " ".join(point.shown), point.job_dir)
            ret = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=point.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            results.append(as_reported(point, ret))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # the front's logging again
        return results


class SubmititLauncher(BaseSubmititLauncher):
    """Submits the points that need a run as one submitit job array, writes the sweep
    manifest, then awaits them all (or, detached, exits)."""

    @property
    def detach(self) -> bool:
        return bool(self.config.launcher.detach)  # kit's key launcher.detach

    def executor(self):
        """submitit's executor with this config's settings, built as hydra-submitit-launcher does."""
        import submitit
        from omegaconf import OmegaConf

        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        init = {f"{self._EXECUTOR}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the rest take the executor's prefix
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        open_sweep(self.config)  # one writer per sweep dir; multirun.yaml without secrets
        points = plan(self, job_overrides, initial_job_idx)
        manifest = self.manifest(sweep_dir, points)
        live = self.live_jobs(manifest)  # never submit a point twice while SLURM still runs it
        if live and not self.detach:  # an attached sweep cannot await jobs another process submitted
            held = ", ".join(f"#{n} ({s.lower()})" for n, s in sorted(live.items()))
            print(
                f"kit: error: jobs {held} of {sweep_dir} are still in SLURM from an earlier submission; expected "
                f"them finished (python -m kit status {sweep_dir}), or add launcher.detach=true",
                file=sys.stderr,
            )
            raise SystemExit(2)
        results = {
            p.num: (returned(p, {"status": "submitted", "job_dir": str(p.job_dir)}) if p.num in live else resume(p))
            for p in points
        }
        for num in live:
            print(f"kit: job #{num} is still {live[num].lower()} in SLURM; not submitted again")
        to_run = [p for p in points if results[p.num] is None]
        jobs = []
        if to_run:
            args = [(p.overrides, "hydra.sweep.dir", p.num, f"job_id_for_{p.num}", Singleton.get_state()) for p in to_run]
            jobs = self.executor().map_array(self, *zip(*args))
            for p, j in zip(to_run, jobs):
                print(f"kit: job #{p.num} ({' '.join(p.shown)}) submitted as {self._EXECUTOR} job {j.job_id}")
            record_submissions(manifest, to_run, jobs)
        jobdir.write_manifest(sweep_dir, manifest)
        if self.detach:
            print(
                f"kit: {len(to_run)} job(s) submitted, {len(points) - len(to_run)} not needed; this process exits "
                f"now. Follow them with: python -m kit status {sweep_dir}  (results: python -m kit collect {sweep_dir})"
            )
            return [results[p.num] or returned(p, {"status": "submitted", "job_dir": str(p.job_dir)}) for p in points]
        if to_run:
            results.update(self.await_all(to_run, jobs))
        return [results[p.num] for p in points]

    def manifest(self, sweep_dir: Path, points: list[Point]) -> dict:
        """The sweep manifest: what is on disk updated with this launch's points."""
        try:
            manifest = jobdir.read_manifest(sweep_dir)
        except KitError:
            manifest = {"format": "kit.sweep/1", "sweep_dir": str(sweep_dir), "created": time.time(), "jobs": {}}
        manifest.update(
            executor=self._EXECUTOR,
            cwd=os.getcwd(),
            command=submit_command(),
            detach=self.detach,
            submitit_folder=str(Path(self.params["submitit_folder"]).absolute()),
            logger=OmegaConf.to_container(self.config.logger, resolve=True, enum_to_str=True),
        )
        for p in points:
            entry = manifest["jobs"].setdefault(str(p.num), {"submissions": []})
            entry.update(num=p.num, overrides=jobdir.point_overrides(p.shown), job_dir=str(p.job_dir), run_id=p.run_id)
        return manifest

    def live_jobs(self, manifest: dict) -> dict[int, str]:
        """Points whose latest submission is still pending or running: {job num: state}."""
        return {}

    def __call__(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str, singleton_state: dict
    ) -> JobReturn:
        """On the worker. A requeued job (preempted, ``scontrol requeue``) finds its earlier
        attempt's files: they are set aside and the job starts again, same dir, same run id."""
        from hydra.core.singleton import Singleton

        Singleton.set_state(singleton_state)
        point = plan(self, [sweep_overrides], job_num)[0]
        if jobdir.is_done(point.job_dir):  # requeued after it had finished: keep the result
            print(jobdir.skip_message(point.job_dir))
            return returned(point, {"status": "done", "job_dir": str(point.job_dir), "skipped": True})
        moved = jobdir.set_aside(point.job_dir)
        if moved:
            restarts = os.environ.get("SLURM_RESTART_COUNT", "?")
            print(
                f"kit: job #{job_num} restarted (SLURM restart {restarts}): the interrupted attempt moved to "
                f"{moved}; training starts again from the base (torchtune cannot resume mid-epoch)",
                flush=True,
            )
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

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

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.detach:  # local workers are this process's children: they cannot outlive it
            print(
                "kit: error: launcher.detach=true needs a cluster; expected hydra/launcher=submitit_slurm "
                "(or local_slurm); submitit_local jobs end with the submitting process",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return super().launch(job_overrides, initial_job_idx)


class SlurmLauncher(SubmititLauncher):
    """A SLURM job array; site settings (partition, account, gpus, setup lines) in its config."""

    _EXECUTOR = "slurm"

    def states(self, jobs: list) -> dict[str, str]:
        return slurm_states([j.job_id for j in jobs])

    def live_jobs(self, manifest: dict) -> dict[int, str]:
        latest = {int(n): e["slurm_id"] for n, e in manifest["jobs"].items() if e.get("slurm_id")}
        states = slurm_states(list(latest.values())) if latest else {}
        return {n: states[i] for n, i in latest.items() if states.get(i) in RUNNING_STATES - {"UNKNOWN"}}


def submit_command() -> list[str]:
    """The kit command line that submitted the sweep (``--rerun-failed`` runs it again)."""
    argv = list(sys.argv)
    command = argv[0].split()[-1] if argv and argv[0].startswith("kit ") else "train"
    return [command, *argv[1:]]


def record_submissions(manifest: dict, points: list[Point], jobs: list) -> None:
    for p, j in zip(points, jobs):
        entry = manifest["jobs"][str(p.num)]
        entry.update(slurm_id=str(j.job_id), submitted=time.time(), stdout=str(j.paths.stdout), stderr=str(j.paths.stderr))
        entry["submissions"].append(str(j.job_id))
