"""Run Inspect tasks against one model and read back {task: {metric: value}}."""

from __future__ import annotations

import time
from pathlib import Path

from kit.core.device import resolve_device, torch_dtype
from kit.core.errors import KitError


def load_task_specs(specs: list[str]) -> None:
    """Fail early, one line, for a task spec Inspect cannot load."""
    from inspect_ai._eval.loader import load_tasks


    for spec in specs:
        try:
            found = load_tasks([spec], {})
        except Exception as e:  # Inspect raises several types for a bad spec
            found, why = [], f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        else:
            why = ""
        if not found:
            raise KitError(
                f"Inspect task {spec!r} not found{why}; expected a task file (path/task.py "
                "or path/task.py@name) or a registered name such as kit/parity"
            )


def scores_from_logs(logs) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for log in logs:
        if log.status != "success":
            msg = log.error.message if log.error else log.status
            raise KitError(f"Inspect eval of task {log.eval.task!r} ended {log.status}: {msg}")
        metrics: dict[str, float] = {}
        scores = log.results.scores if log.results else []
        for score in scores:
            prefix = "" if len(scores) == 1 else f"{score.name}/"
            for name, metric in score.metrics.items():
                metrics[prefix + name] = float(metric.value)
        out[log.eval.task.split("/")[-1]] = metrics
    return out


def max_connections(eval_cfg) -> int:
    """Inspect's concurrency (samples in flight): ``eval.max_connections``, else ``eval.batch_size``
    (a batch only fills when at least that many samples are in flight)."""
    return int(eval_cfg.get("max_connections") or eval_cfg.batch_size)


def run_inspect(model, task_specs: list[str], log_dir: Path, eval_cfg, limit=None) -> dict:
    """Evaluate an Inspect ``Model`` on the tasks; returns scores, log files, seconds."""
    from inspect_ai import eval as inspect_eval


    start = time.perf_counter()
    logs = inspect_eval(
        list(task_specs),
        model=model,
        log_dir=str(log_dir),
        display="none",
        limit=limit,
        max_tokens=int(eval_cfg.max_tokens),
        temperature=float(eval_cfg.temperature),
        seed=int(eval_cfg.seed),
        max_connections=max_connections(eval_cfg),
        fail_on_error=True,
    )
    return {
        "scores": scores_from_logs(logs),
        "logs": [str(log.location) for log in logs],
        "seconds": time.perf_counter() - start,
    }


def hf_model(path: Path, name: str, eval_cfg, trust_remote_code: bool = False):
    """An Inspect ``hf`` model on a local folder, greedy when temperature is 0.

    ``set_model_info`` first: otherwise Inspect's model-info lookup can build a
    second provider instance and load the weights twice.
    """
    from inspect_ai.model import GenerateConfig, get_model
    from inspect_ai.model._model_data.model_data import ModelInfo
    from inspect_ai.model._model_info import set_model_info


    device = resolve_device(eval_cfg.device)
    dtype = torch_dtype(eval_cfg.dtype, device)
    set_model_info(f"hf/{name}", ModelInfo(organization="kit"))
    return get_model(
        f"hf/{name}",
        memoize=False,
        config=GenerateConfig(max_connections=max_connections(eval_cfg)),  # hf: also its batch size
        model_path=str(path),
        device=device,
        dtype=dtype,
        do_sample=float(eval_cfg.temperature) > 0,
        trust_remote_code=trust_remote_code,
    )
