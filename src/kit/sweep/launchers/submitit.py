"""Submitit launchers: the points that need a run as one submitit job array, the sweep manifest
(``<sweep>/manifest.json``: each point's run id, job dir, SLURM ids and log files, so ``kit status`` /
``kit collect`` work without the submitter), then every job awaited (or, with ``launcher.detach=true``,
the submitter exits). A requeued job (SLURM preemption, ``scontrol requeue``) starts again in the same
job dir under the same run id, its interrupted attempt set aside (torchtune 0.6.1 saves its recipe
state only at epoch ends, so a clean restart is the only state never stale)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from kit.core.config import redact_overrides
from kit.core.errors import KitError
from kit.core.jobdir import JobDir, point_overrides, skip_message
from kit.core.sweepdir import read_manifest, write_manifest
from kit.sweep.launchers.common import Point, as_reported, error_line, failed, open_sweep, plan, resume, returned
from kit.sweep.slurm_client import POLL_S, RESULT_GRACE_S, RUNNING_STATES, WHY


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
        write_manifest(sweep_dir, manifest)
        if self.detach:
            print(
                f"kit: {len(to_run)} job(s) submitted, {len(points) - len(to_run)} not needed; this process exits "
                f"now. Follow them with: python -m kit status {sweep_dir}  (results: python -m kit collect {sweep_dir})"
            )
            return [results[p.num] or returned(p, {"status": "submitted", "job_dir": str(p.job_dir)}) for p in points]
        if to_run:
            results.update(self.await_all(to_run, jobs))
        return [results[p.num] for p in points]

    def entry(self):
        """This launcher's registry entry (kit.sweep.launchers), found by its class."""
        from kit.sweep.launchers import LAUNCHERS  # the registry imports this module

        return next(e for e in LAUNCHERS.values() if e.target.rpartition(".")[2] == type(self).__name__)

    def manifest(self, sweep_dir: Path, points: list[Point]) -> dict:
        """The sweep manifest: what is on disk updated with this launch's points."""
        try:
            manifest = read_manifest(sweep_dir)
        except KitError:
            manifest = {"format": "kit.sweep/1", "sweep_dir": str(sweep_dir), "created": time.time(), "jobs": {}}
        manifest.update(
            executor=self._EXECUTOR,
            launcher=self.entry().name,
            cwd=os.getcwd(),
            command=redact_overrides(submit_command()),  # secrets are refused before this; never stored either
            detach=self.detach,
            submitit_folder=str(Path(self.params["submitit_folder"]).absolute()),
            logger=OmegaConf.to_container(self.config.logger, resolve=True, enum_to_str=True),
        )
        for p in points:
            entry = manifest["jobs"].setdefault(str(p.num), {"submissions": []})
            entry.update(num=p.num, overrides=point_overrides(p.shown), job_dir=str(p.job_dir), run_id=p.run_id)
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
        if JobDir(point.job_dir).is_done():  # requeued after it had finished: keep the result
            print(skip_message(point.job_dir))
            return returned(point, {"status": "done", "job_dir": str(point.job_dir), "skipped": True}, record=False)
        moved = JobDir(point.job_dir).set_aside()
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
            return failed(point, f"{error_line(e)}; log: {job.paths.stderr}")


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
