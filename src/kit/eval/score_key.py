"""What decides a base model's score, as content: the key of the base-score cache.

A cached score is reused only when everything that can change it is the same:

- the base folder: every top-level file (weights of any format, ``config.json``,
  ``generation_config.json``, tokenizer files, chat template), by name and content
  (kit.core.identity.content_sha256: read once per file version, then known from its
  stat); dotfiles and subfolders are not read by transformers and left out;
- each task as Inspect loads it: the source file of the task (a task file, or the module
  of a registered task such as ``kit/parity``), the content of every sample it yields
  (input, target, choices, metadata, ids: the data, wherever it was read from), any files
  the module lists in ``KIT_DATA_FILES`` (paths relative to it: data a solver or scorer
  reads while it runs), its solver, scorer and metrics with their parameters, epochs,
  version and generation config;
- how it is scored: the limit, max_tokens, temperature, seed, batch size and concurrency,
  device (and GPU name), dtype, ``trust_remote_code``, and which model path scores it
  (the resident ``peft/base`` or a plain ``hf`` folder);
- the code: the versions of the pinned stack (torch, transformers, peft, Inspect, ...),
  Python, kit's version and a hash of kit's own source at and below the eval layer (the
  only kit code the scoring can import; an editable install changes without a new version).

Not covered: code a task file imports from other files of the user's own.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import re
from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.identity import content_sha256
from kit.core.versions import stack_versions

KIT_LAYERS_THAT_SCORE = ("core", "lora", "train", "eval")  # kit.eval may import only these
ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # repr() of functions: differs per process


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=stable_repr).encode()).hexdigest()


def stable_repr(value) -> str:
    return ADDRESS.sub("", repr(value))


def base_files(base: Path) -> dict[str, str]:
    """{file name: content sha256} of every top-level file of the base folder."""
    files = sorted(p for p in Path(base).iterdir() if not p.name.startswith(".") and p.is_file())
    return {p.name: content_sha256(p) for p in files}


def kit_source() -> str:
    """sha256 over kit's own source files that scoring can run (by relative path)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for layer in KIT_LAYERS_THAT_SCORE:
        for path in sorted((root / layer).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def kit_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kit")
    except PackageNotFoundError:
        return None


def describe(obj) -> object:
    """A registry object (solver, scorer, metric) as its name and parameters; lists item by item."""
    from inspect_ai._util.registry import is_registry_object, registry_info, registry_params

    if isinstance(obj, (list, tuple)):
        return [describe(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v) for k, v in obj.items()}
    if is_registry_object(obj):
        try:
            params = registry_params(obj)
        except ValueError:
            params = {}
        return {"name": registry_info(obj).name, "params": json.loads(json.dumps(params, default=stable_repr))}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return stable_repr(obj)


def sample_content(sample) -> dict:
    """A sample as data: chat messages lose the random ``id`` Inspect gives each one on load."""
    data = sample.model_dump(mode="json", exclude_none=True)
    if isinstance(data.get("input"), list):
        data["input"] = [{k: v for k, v in m.items() if k != "id"} for m in data["input"]]
    return data


def task_source(spec: str, task) -> Path | None:
    """The file that defines the task: a task file as given, or a registered task's module."""
    from inspect_ai._util.registry import registry_lookup

    given = getattr(task, "__task_file__", None)
    if given:
        return Path(given).resolve()
    factory = registry_lookup("task", spec.split("@")[0]) or registry_lookup("task", task.name)
    try:
        found = inspect.getsourcefile(inspect.unwrap(factory)) if factory is not None else None
    except TypeError:
        found = None
    return Path(found) if found else None


def declared_files(source: Path | None) -> dict[str, str]:
    """Files the task module lists in a module-level ``KIT_DATA_FILES = [...]`` (paths relative
    to the module), by content. Read from the source as a literal: nothing is run again."""
    import ast

    if source is None or source.suffix != ".py" or not source.is_file():
        return {}
    listed: list = []
    for node in ast.parse(source.read_bytes()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KIT_DATA_FILES" for t in node.targets):
            listed = list(ast.literal_eval(node.value))
    return {str(f): content_sha256(source.parent / f) for f in listed}


def task_identity(spec: str, task) -> dict:
    source = task_source(spec, task)
    samples = [sample_content(s) for s in task.dataset]
    return {
        "spec": spec,
        "name": task.name,
        "version": task.version,
        "source": content_sha256(source) if source and source.is_file() else None,
        "declared_files": declared_files(source),
        "samples": sha256_json(samples),
        "sample_count": len(samples),
        "solver": describe(task.solver),
        "scorer": describe(task.scorer),
        "metrics": describe(task.metrics),
        "epochs": describe(task.epochs),
        "config": task.config.model_dump(mode="json", exclude_none=True),
    }


def task_identities(specs: list[str]) -> list[dict]:
    from inspect_ai._eval.loader import load_tasks

    return [task_identity(spec, task) for spec in specs for task in load_tasks([spec], {})]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return f"{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return device


def scoring(ctx, scorer: str) -> dict:
    cfg = ctx.eval_cfg
    device = resolve_device(cfg.device)
    return {
        "scorer": scorer,
        "limit": ctx.limit,
        "max_tokens": int(cfg.max_tokens),
        "temperature": float(cfg.temperature),
        "seed": int(cfg.seed),
        "batch_size": int(cfg.batch_size),
        "max_connections": cfg.get("max_connections"),
        "device": device_name(device),
        "dtype": resolve_dtype(cfg.dtype, device),
        "trust_remote_code": bool(ctx.trust_remote_code),
    }


def score_identity(ctx, scorer: str) -> dict:
    """Everything a base score depends on (module docstring), as plain values."""
    return {
        "format": 2,
        "base": base_files(ctx.base),
        "tasks": task_identities(list(ctx.tasks)),
        "scoring": scoring(ctx, scorer),
        "versions": {**stack_versions(), "kit": kit_version(), "python": platform.python_version()},
        "kit_source": kit_source(),
    }


def score_key(identity: dict) -> str:
    return sha256_json(identity)[:16]
