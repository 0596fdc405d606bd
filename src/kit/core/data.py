"""Datasets: the bundled demo data and validation of user-supplied files.

A dataset is a JSON-lines file of records with a prompt column and a response
column (names from config). Files are checked before training starts so a
broken file fails in one line, not deep inside torchtune.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.core.errors import KitError

BUNDLED = Path(__file__).parents[1] / "bundled"


def bundled(name: str) -> Path:
    return BUNDLED / name


def read_jsonl(path: str | Path, columns: tuple[str, ...] = ()) -> list[dict]:
    """Parse a JSON-lines file; every record must hold ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"dataset file {str(path)!r} not found; expected a JSON-lines file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise KitError(
                    f"dataset file {str(path)!r} line {lineno} is not JSON ({e.msg}); "
                    "expected one JSON object per line"
                ) from None
            missing = [c for c in columns if not isinstance(row, dict) or c not in row]
            if missing:
                raise KitError(
                    f"dataset file {str(path)!r} line {lineno} lacks column(s) {missing}; "
                    f"expected keys {list(columns)}"
                )
            rows.append(row)
    if not rows:
        raise KitError(f"dataset file {str(path)!r} is empty; expected JSON-lines records")
    return rows


def corpus_lines() -> list[str]:
    """Text the tiny tokenizer is trained on: the bundled data plus chat scaffolding."""
    lines = ["user", "assistant", "system", "\n"]
    for name in sorted(p.name for p in BUNDLED.glob("*.jsonl")):
        for row in read_jsonl(BUNDLED / name):
            lines.extend(str(v) for v in row.values())
    return lines
