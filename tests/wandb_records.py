"""Read a W&B offline ``run-*.wandb`` file back into protobuf records.

The file is a LevelDB-style log: a 7-byte file header (``:W&B`` + magic +
version), then 32 KiB blocks of records, each ``crc32(4) length(2) type(1)``
followed by data; a record too long for a block is split FIRST/MIDDLE/LAST.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        block_left = BLOCK - pos % BLOCK
        if block_left < HEADER:  # block trailer padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def run_info(path: Path) -> dict:
    """group, job_type, name, tags, config keys, history keys and summary of one run file."""
    import json

    info = {"history": {}, "summary": {}, "config": {}, "metrics": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "metric":  # define_metric: name or glob -> step metric and summary kinds
            m = r.metric
            info["metrics"][m.name or m.glob_name] = {
                "step_metric": m.step_metric,
                "summary": sorted(f.name for f, v in m.summary.ListFields() if v),
            }
        elif kind == "config":  # config set after init, e.g. W&B's panels (_wandb/visualize/<key>)
            info["config"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.config.update})
        elif kind == "run":
            info.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name, tags=list(r.run.tags))
            info["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "history":
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                info["history"].setdefault(key, []).append(json.loads(item.value_json))
        elif kind == "summary":
            for item in r.summary.update:
                key = item.key or "/".join(item.nested_key)
                info["summary"][key] = json.loads(item.value_json)
    return info


def artifacts(path: Path) -> list[dict]:
    """Every artifact record of one run file: what the run logged (``used`` False: its output) or
    marked as used (``use_after_commit``: its input; W&B records the use on sync)."""
    import json

    out = []
    for r in records(path):
        if r.WhichOneof("record_type") != "artifact":
            continue
        a = r.artifact
        out.append(
            {
                "run_id": a.run_id,
                "name": a.name,
                "type": a.type,
                "digest": a.digest,
                "used": a.use_after_commit,
                "metadata": json.loads(a.metadata) if a.metadata else {},
                "files": {e.path: {"digest": e.digest, "size": e.size, "local_path": e.local_path} for e in a.manifest.contents},
            }
        )
    return out


def table(path: Path, key: str) -> dict:
    """A W&B Table logged under ``key`` in one run file, read from the run's files folder:
    {"columns": [...], "data": [[...], ...]}."""
    import json

    info = run_info(path)
    ref = info["summary"].get(f"{key}/path") or info["history"][f"{key}/path"][-1]
    return json.loads((Path(path).parent / "files" / ref).read_text())
