"""torchtune metric logger for kit jobs: every step to ``metrics.jsonl``, and to the
job's open W&B run (kit opens it and attaches it after torchtune built this logger from the config;
torchtune's recipe only calls ``log_dict``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from torchtune.training.metric_logging import MetricLoggerInterface

from kit.train.recipe_config import METRICS


class JobMetricLogger(MetricLoggerInterface):
    def __init__(self, log_dir: str, **_: object):
        self._file = (Path(log_dir) / METRICS).open("a", encoding="utf-8")
        self.run = None  # the phase's W&B run, attached by kit.train.recipes

    def attach(self, run) -> None:
        self.run = run

    def log(self, name: str, data: float, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_dict(self, payload: dict, step: int) -> None:
        row = {"step": step, "time": time.time(), **{k: float(v) for k, v in payload.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.run is not None:
            self.run.log({"train/step": step, **{f"train/{k}": float(v) for k, v in payload.items()}}, step=step)

    def log_config(self, config) -> None:  # kit logs the resolved kit config itself
        pass

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __del__(self) -> None:
        self.close()
