"""``hydra/launcher=basic`` (the default): Hydra's own launcher, jobs one after another in this process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_launcher import BasicLauncher as HydraBasicLauncher
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals

from kit.core.record import record
from kit.sweep.launcher import LauncherEntry
from kit.sweep.launchers.common import as_reported, open_sweep, plan, resume


@dataclass
class BasicConf:
    _target_: str = "hydra_plugins.kit_launcher.launchers.BasicLauncher"


class BasicLauncher(HydraBasicLauncher):
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
            with record(f"job {k} of {len(points)} (#{point.num} {' '.join(point.shown)}) in {point.job_dir}") as rec:
                ret = as_reported(point, self.run_point(point))
                rec.detail = (ret.return_value or {}).get("status")
            results.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # the front's logging again
        return results

    def run_point(self, point) -> JobReturn:
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=point.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


LAUNCHER = LauncherEntry("basic", BasicConf, "Hydra's own, jobs one after another in this process")
