"""One identity per run: a run id from the job's resolved config, a content hash per adapter,
and content hashes of files, read once per file version (``content_sha256``).

The run id names a job everywhere it shows up (summary.json, the sweep manifest, the W&B
run ids of its phases), so a requeue, a re-run of the same sweep or a later ``kit eval``
attaches to the same run instead of creating a stray. It is a content hash: the same
resolved config gives the same id on any machine, a changed value gives another one.
Left out: Hydra's own keys (paths, timestamps, launcher settings: where and how a job ran,
not what it is) and anything that looks like a secret (never hashed into a public name).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from kit.core.config import secret_name
from kit.core.errors import KitError
from kit.core.folders import cache_root
from kit.core.model.snapshot import hash_tensors

RUN_ID_CHARS = 16  # 64 bits: unique across any realistic number of runs, short enough to read
# Keys that say where or how a job ran, not what it computes.
RUNTIME_KEYS = ("hydra", "launcher")


def identity_config(cfg: DictConfig | dict) -> dict:
    """The resolved config the run id hashes: plain values, no Hydra/runtime keys, no secrets."""
    if not isinstance(cfg, dict):
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):  # dropped before resolving: Hydra's keys resolve only inside a running app
            for key in RUNTIME_KEYS:
                cfg.pop(key, None)
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return strip({k: v for k, v in cfg.items() if k not in RUNTIME_KEYS})


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not secret_name(k)}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def run_id(cfg: DictConfig | dict) -> str:
    text = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_CHARS]


def phase_run_id(run: str, phase: str) -> str:
    """W&B run id of one phase of a run (train, eval, verify): one W&B run per phase, so each
    keeps its own step axis and job_type; resumed, never duplicated."""
    return f"{run}-{phase}"


def adapter_hash(folder: Path) -> str:
    """sha256 over every file of an adapter folder (weights and config), by relative path:
    any changed byte, file added or removed gives another hash."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def files_stat(folder: Path) -> list[list]:
    """(relative path, bytes, mtime in ns) of every file under ``folder``: a cheap identity for a
    folder too large to hash each time it is used (a full model, a base). The same bytes written
    again read as another folder: safe for caches and resumes, if sometimes less than possible."""
    folder = Path(folder)
    files = (p for p in folder.rglob("*") if p.is_file())
    return sorted([p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files)


def changed_adapter(what: str, folder: Path, recorded: str | None) -> str | None:
    """One line when the adapter in ``folder`` is not the one recorded (None: same, or none recorded)."""
    if not recorded:
        return None
    now = adapter_hash(folder)
    if now == recorded:
        return None
    return (
        f"{what}: adapter {str(folder)!r} changed since it was recorded (content hash {now[:12]}, "
        f"recorded {recorded[:12]}); expected the adapter as trained (retrain or re-export it)"
    )


LINEAGE = "kit_lineage.json"


def base_fingerprint(folder: Path) -> str:
    """sha256 over every tensor stored in the base's safetensors files, in name order."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise KitError(f"no *.safetensors weights in {str(folder)!r}; expected a model folder")

    def tensors():
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                for name in sorted(f.keys()):
                    yield name, f.get_tensor(name)

    return hash_tensors(tensors())


def read_lineage(folder: Path) -> dict | None:
    path = Path(folder) / LINEAGE
    return json.loads(path.read_text()) if path.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """How one job shows up in W&B: its sweep's group, its run name, its run id (``run_id``)."""

    group: str
    name: str
    run_id: str | None = None

    def named(self, suffix: str) -> RunIdentity:
        """The same run's identity for a part of it (one modifier of a modifier job)."""
        return RunIdentity(self.group, f"{self.name}-{suffix}", self.run_id)


FILE_HASHES = "file_hashes"  # under $KIT_CACHE: one small record per hashed file version


def stat_key(path: Path) -> dict:
    """What identifies one version of a file without reading it: its real path, device and
    inode, size, and modification and change times in ns. Writing a file changes mtime and
    ctime, and ctime cannot be set back by any ordinary tool (``touch -d`` sets mtime only),
    so equal keys mean the same bytes; a copy, move or chmod only costs a fresh hash."""
    real = Path(path).resolve()
    st = real.stat()
    return {
        "path": str(real),
        "dev": st.st_dev,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def content_sha256(path: Path, cache: Path | None = None) -> str:
    """sha256 of a file's bytes, read once per file version: the digest is kept in ``cache``
    (default ``$KIT_CACHE/file_hashes``) under its ``stat_key``. An 8B base is 16 GB to read;
    every later job reads a few hundred bytes per file instead. The cache is only a shortcut:
    a record that cannot be read or written means the file is hashed again, never an error."""
    key = stat_key(path)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    record = (cache or cache_root() / FILE_HASHES) / f"{name}.json"
    try:
        saved = json.loads(record.read_text())
        if saved.get("key") == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = file_sha256(Path(key["path"]))
    if stat_key(path) == key:  # not changed while it was read: worth remembering
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": key, "sha256": digest}))
            tmp.replace(record)
        except OSError:  # full or read-only cache: the next job hashes again
            tmp.unlink(missing_ok=True)
    return digest
