"""What a job stored, as W&B artifacts with lineage, offline-first.

The chain a researcher follows in W&B's lineage view: the base model -> (train run) -> the
adapter or full model -> (eval run); a merged model, a modifier or a compressed model is one more
artifact of its own kind, with the artifacts it came from as the producing run's inputs.

- **Small checkpoints** (adapters, modifiers) are artifacts of their files, uploaded on sync.
- **Model-sized folders** (the base, a full or merged model, a compressed model) are never
  uploaded: the artifact holds one small file, ``kit_model.json``, with the folder's content
  fingerprint (sha256 over every tensor, kit.core.identity.base_fingerprint) and its config.json.
  The same weights give the same file, so the same artifact digest on any machine and any path:
  W&B keeps one version per content, and every run that used it points at that version.

Offline, ``run.use_artifact`` refuses (wandb 0.31 raises "Cannot use artifact when in offline
mode"); what it does online for an artifact built in the process, log it with "use after commit",
is written to the offline file instead, and ``wandb sync`` then records the use: a version that
already exists is marked used by the run and nothing is uploaded again, a new one is created
first. The first run to sync an artifact is recorded as its producer, so sync a job's runs in
order (``wandb sync <job>/wandb/offline-run-*`` sorts them by start time).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kit.core.folders import cache_root
from kit.core.identity import LINEAGE, base_fingerprint, files_stat

TYPES = {  # kit's kind of stored model -> W&B artifact type
    "base": "base-model",
    "adapter": "lora-adapter",
    "modifier": "lora-modifier",
    "full": "model",
    "merged": "merged-model",
    "compressed": "compressed-model",
}
UPLOADED = ("adapter", "modifier")  # uploaded as files; every other kind by content fingerprint
IDENTITY_FILE = "kit_model.json"


def fingerprint(folder: Path) -> str:
    """The folder's tensor fingerprint, cached under ``$KIT_CACHE/fingerprints`` by its files'
    names, sizes and times (hashing a 16 GB base reads 16 GB: once per base and machine)."""
    import hashlib

    key = hashlib.sha256(json.dumps([str(Path(folder).resolve()), files_stat(folder)]).encode()).hexdigest()[:24]
    path = cache_root() / "fingerprints" / key
    try:
        return path.read_text().strip()
    except OSError:
        pass
    value = base_fingerprint(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        tmp.replace(path)
    except OSError:  # a read-only cache: computed again next time, never a failure
        pass
    return value


def slug(text: str) -> str:
    """An artifact name W&B accepts (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:100] or "model"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def model_artifact(run, kind: str, folder: Path, name: str, metadata: dict | None = None):
    """An artifact of one stored model folder (not yet logged)."""
    import wandb

    folder = Path(folder)
    meta = {"kind": kind, "path": str(folder), **(metadata or {})}
    lineage = read_json(folder / LINEAGE)
    if lineage:
        meta["lineage"] = lineage
    if kind not in UPLOADED:  # in the metadata before the artifact copies it
        ident = {"kind": kind, "fingerprint": fingerprint(folder), "config": read_json(folder / "config.json")}
        meta["fingerprint"] = ident["fingerprint"]
    artifact = wandb.Artifact(slug(name), type=TYPES[kind], metadata=meta)
    if kind in UPLOADED:
        # immutable: no staging copy (kit never changes a checkpoint once exported; its content
        # hash guards that), uploaded from where it lies at sync time
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):  # add_dir would print a line per call
            artifact.add_file(str(path), name=path.relative_to(folder).as_posix(), policy="immutable", skip_cache=True)
        return artifact
    where = Path(run.dir).parent / "kit_artifacts"  # inside the offline run folder: synced with it
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{slug(name)}-{ident['fingerprint'][:16]}.json"
    path.write_text(json.dumps(ident, sort_keys=True, indent=1))
    artifact.add_file(str(path), name=IDENTITY_FILE, policy="immutable", skip_cache=True)
    return artifact


def use(run, artifact) -> None:
    """Mark ``artifact`` as an input of ``run``, online or offline (see the module docstring)."""
    if run.offline:
        # wandb 0.31's own use_artifact does exactly this for an artifact built in the process,
        # but refuses offline: the private call is the only offline route (wandb is pinned)
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(artifact)


def base_artifact(run, base: Path):
    return model_artifact(run, "base", base, f"base-{Path(base).name}")


def checkpoint_kind(checkpoint: dict) -> str:
    """kit's kind of a checkpoint's JSON (``summary.json`` ``checkpoint``): a full model that was
    merged from an adapter is ``merged``."""
    return "merged" if checkpoint.get("merged_from") else checkpoint["kind"]


def checkpoint_artifact(
    run, checkpoint: dict, base: Path, kind: str | None = None, name: str | None = None, run_id: str | None = None
):
    """The artifact of a job's checkpoint; the same checkpoint gives the same artifact in every run
    that builds it (export logs it, eval uses it). ``name`` default: ``<kind>-<the job's run id>``
    (``run_id``, default the run's own ``kit_run_id``: a ``kit eval`` run has its own and passes the job's)."""
    kind = kind or checkpoint_kind(checkpoint)
    run_id = run_id or run.config.get("kit_run_id")
    name = name or f"{kind}-{run_id or (checkpoint.get('content_hash') or '')[:16] or Path(checkpoint['path']).name}"
    metadata = {
        "kit_run_id": run_id,
        "bytes": checkpoint.get("bytes"),
        "content_hash": checkpoint.get("content_hash"),
        "merged_from": checkpoint.get("merged_from"),
        "base": {"name": slug(f"base-{Path(base).name}"), "path": str(base), "fingerprint": fingerprint(base)},
    }
    return model_artifact(run, kind, Path(checkpoint["path"]), name, {k: v for k, v in metadata.items() if v is not None})


def as_json(checkpoint) -> dict:
    return checkpoint if isinstance(checkpoint, dict) else checkpoint.to_json()


def log_checkpoint_artifact(
    run, checkpoint, base: Path, kind: str | None = None, name: str | None = None, inputs=()
) -> str | None:
    """Log what a job stored as an output of ``run`` (the run that made it), with the base and any
    other ``inputs`` (``(kind, folder)`` pairs: the model a compressed model came from, say) as its
    inputs. ``checkpoint``: a ``Checkpoint`` or its JSON; ``kind``: adapter, modifier, full,
    merged, compressed (default: from the checkpoint). Returns the artifact's name."""
    if run is None:
        return None
    use(run, base_artifact(run, base))
    for input_kind, folder in inputs:
        use(run, model_artifact(run, input_kind, Path(folder), f"{input_kind}-{Path(folder).name}"))
    artifact = checkpoint_artifact(run, as_json(checkpoint), base, kind, name)
    run.log_artifact(artifact)
    return artifact.name


def use_checkpoint_artifact(
    run, checkpoint, base: Path, kind: str | None = None, name: str | None = None, run_id: str | None = None
) -> None:
    """Mark the evaluated checkpoint and its base (the base is scored too) as inputs of an eval run;
    ``run_id``: the job's, when the eval run has another (``kit eval``)."""
    if run is None:
        return
    use(run, checkpoint_artifact(run, as_json(checkpoint), base, kind, name, run_id))
    use(run, base_artifact(run, base))
