"""Run Inspect tasks against one model and read back {task: {metric: value}}."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kit.core.device import resolve_device, torch_dtype
from kit.core.errors import Interrupted, KitError
from kit.core.model.families import load_args as family_load_args
from kit.eval import resume


def load_task_specs(specs: list[str]) -> None:
    """Fail early, one line, for a task spec Inspect cannot load."""
    from inspect_ai._eval.loader import load_tasks

    for spec in specs:
        check_task_file(spec)
        try:
            found = load_tasks([inspect_spec(spec)], {})
        except Exception as e:  # Inspect raises several types for a bad spec
            found, why = [], f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        else:
            why = ""
        if not found:
            raise KitError(
                f"Inspect task {spec!r} not found{why}; expected a task file (path/task.py "
                "or path/task.py@name) or a registered name such as kit/parity"
            )


def first_samples(spec: str, n: int = 1) -> list[tuple[str, str]]:
    """(input, target) of a task's first ``n`` samples, as Inspect loads them (text inputs only)."""
    from inspect_ai._eval.loader import load_tasks

    task = load_tasks([inspect_spec(spec)], {})[0]
    out = []
    for sample in list(task.dataset)[:n]:
        target = sample.target if isinstance(sample.target, str) else sample.target[0]
        if not isinstance(sample.input, str):
            raise KitError(f"Inspect task {spec!r} has chat-message inputs; expected text inputs to serve")
        out.append((sample.input, target))
    return out


def inspect_spec(spec: str) -> str:
    """The spec as Inspect 0.3.285 takes it: it globs a file or folder given without ``@name`` under
    the working directory, and pathlib refuses an absolute pattern ("Non-relative patterns are
    unsupported"), so an absolute path is passed relative to the working directory (read when
    the tasks load)."""
    path, at, _ = spec.partition("@")
    if not at and os.path.isabs(path) and os.path.exists(path):
        return os.path.relpath(path)
    return spec


def check_task_file(spec: str) -> None:
    """A task file that does not compile: say so (Inspect reports it as "task not found")."""
    path = Path(spec.split("@")[0])
    if path.suffix != ".py" or not path.is_file():
        return
    try:
        compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as e:
        raise KitError(
            f"Inspect task file {str(path)!r} line {e.lineno}: {e.msg} (SyntaxError); expected a Python file that compiles"
        ) from None
    except ValueError as e:  # e.g. null bytes
        raise KitError(f"Inspect task file {str(path)!r} cannot be compiled ({e}); expected a Python file") from None


def scored_samples(results) -> int:
    """Samples that ran to a score (a drained or cancelled task logs fewer than it planned)."""
    logged = results.total_samples if results.logged_samples is None else results.logged_samples
    return min(results.completed_samples, logged)


def cancelled_logs(log_dir: Path, since: float) -> list[str]:
    """This run's logs that Inspect wrote as cancelled (Ctrl-C: Inspect stops, writes them, and
    returns no logs at all)."""
    from inspect_ai.log import read_eval_log

    found = []
    for path in sorted(Path(log_dir).glob("*.eval")) if Path(log_dir).is_dir() else []:
        if path.stat().st_mtime >= since:
            try:
                if read_eval_log(str(path), header_only=True).status == "cancelled":
                    found.append(str(path))
            except Exception:  # a log cut short: not ours to judge
                continue
    return found


def scores_from_logs(logs, specs: list[str] = (), log_dir: Path | None = None, since: float = 0.0) -> dict[str, dict[str, float]]:
    """Every task's metrics; anything short of a complete, scored eval of every task raises
    (a cancelled or partial eval must never be recorded as a result)."""
    if not logs:
        cancelled = cancelled_logs(log_dir, since) if log_dir else []
        if cancelled:
            raise Interrupted(f"Inspect eval of {list(specs)} was cancelled (log: {cancelled[0]})")
        raise KitError(f"Inspect returned no eval log for tasks {list(specs)}; nothing was scored")
    out: dict[str, dict[str, float]] = {}
    for log in logs:
        where = f" (log: {log.location})" if log.location else ""
        if log.status == "cancelled":
            done = log.results.completed_samples if log.results else 0
            raise Interrupted(f"Inspect eval of task {log.eval.task!r} was cancelled after {done} sample(s){where}")
        if log.status != "success":
            msg = log.error.message if log.error else log.status
            raise KitError(f"Inspect eval of task {log.eval.task!r} ended {log.status}: {msg}")
        results = log.results
        if results is None or not results.scores or scored_samples(results) < results.total_samples:
            got = f"{results.completed_samples} of {results.total_samples} samples" if results else "no results"
            raise KitError(f"Inspect eval of task {log.eval.task!r} is incomplete ({got}){where}; expected every sample scored")
        metrics: dict[str, float] = {}
        scores = results.scores
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


def run_inspect(model, task_specs: list[str], log_dir: Path, eval_cfg, limit=None, server: bool = False) -> dict:
    """Evaluate an Inspect ``Model`` on the tasks; returns scores, log files, seconds, and what was
    resumed. ``server``: an OpenAI-compatible server (vLLM, kit serve), where a missing temperature
    means 1.0, not greedy. One Inspect eval per task (Inspect runs a call's tasks one after the
    other anyway): each log carries its own identity, and each task resumes on its own
    (kit.eval.resume)."""
    start = time.perf_counter()
    scores, logs, resumed = {}, [], []
    for spec in task_specs:
        plan = resume.plan(spec, log_dir, eval_cfg, limit)
        started = time.time() - 1
        found = inspect_eval_one(model, plan, log_dir, eval_cfg, limit, server)
        scores.update(scores_from_logs(found, [spec], log_dir, started))
        logs += [str(log.location) for log in found]
        resumed += [r for r in (resume.reused(plan, log) for log in found) if r]
    return {"scores": scores, "logs": logs, "seconds": time.perf_counter() - start, "resumed": resumed}


def inspect_eval_one(model, plan, log_dir: Path, eval_cfg, limit, server: bool):
    from inspect_ai import eval as inspect_eval

    from kit.eval.providers import batching

    batching.install()  # also for Inspect's own hf/ provider (eval=merge) where kit's providers were not imported

    return inspect_eval(
        plan.task(inspect_spec(plan.spec)),
        model=model,
        log_dir=str(log_dir),
        display="none",
        limit=limit,
        max_tokens=int(eval_cfg.max_tokens),
        # greedy (0) passes no temperature to transformers (it warns that it is unused without sampling);
        # a server must be told 0 explicitly
        temperature=float(eval_cfg.temperature) if server or float(eval_cfg.temperature) > 0 else None,
        seed=int(eval_cfg.seed),
        max_connections=max_connections(eval_cfg),
        fail_on_error=True,
        metadata=plan.metadata(),  # the run identity a later attempt resumes by
        # Inspect 0.3.285 starts a control-channel HTTP server (uvicorn) per eval by default; uvicorn
        # captures SIGINT while it serves, and a Ctrl-C during the eval was seen to be swallowed (the
        # eval ran on to a "done" job). kit uses no control channel: off, so Ctrl-C stops the eval.
        ctl_server=False,
    )


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
        **family_load_args(path),  # Gemma 2: eager attention, the one that applies its soft-capping
    )
