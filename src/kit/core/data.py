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
    """Parse a JSON-lines file; every record must hold ``columns``, each a string."""
    return [row for _, row in numbered_rows(path, columns)]


def numbered_rows(path: str | Path, columns: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, record) of every record; a bad line fails in one line naming file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"dataset file {str(path)!r} not found; expected a JSON-lines file")
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decoded(path, lineno, raw)
            where = f"dataset file {str(path)!r} line {lineno}"
            if not line.strip():  # a JSON-lines reader may count it as a row or not: no guessing
                raise KitError(f"{where} is empty; expected one JSON object per line (remove the empty line)")
            try:
                row = json.loads(line)
                check_columns(path, lineno, row, columns)
                check_text(where, row)
            except json.JSONDecodeError as e:
                raise KitError(f"{where} column {e.colno} is not JSON ({e.msg}); expected one JSON object per line") from None
            except RecursionError:  # json's parser (and any walk of the row) recurses once per nesting level
                raise KitError(f"{where} is nested too deeply to read; expected one flat JSON object per line") from None
            rows.append((lineno, row))
    if not rows:
        raise KitError(f"dataset file {str(path)!r} is empty; expected JSON-lines records")
    return rows


def decoded(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8", "replace")) + 1
        raise KitError(
            f"dataset file {str(path)!r} line {lineno} column {column} is not UTF-8 (byte 0x{raw[e.start]:02x}); "
            "expected UTF-8 text"
        ) from None


JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


def check_columns(path: Path, lineno: int, row, columns: tuple[str, ...]) -> None:
    """Every column present and a string: torchtune's templates fail deep inside on anything else."""
    missing = [c for c in columns if not isinstance(row, dict) or c not in row]
    if missing:
        raise KitError(f"dataset file {str(path)!r} line {lineno} lacks column(s) {missing}; expected keys {list(columns)}")
    for c in columns:
        if not isinstance(row[c], str):
            what = JSON_TYPES.get(type(row[c]), type(row[c]).__name__)
            raise KitError(
                f"dataset file {str(path)!r} line {lineno} column {c!r} is {what} ({json.dumps(row[c])[:40]}); expected a string"
            )
        if not row[c].strip():  # an empty prompt or answer trains the model on nothing
            raise KitError(f"dataset file {str(path)!r} line {lineno} column {c!r} is empty (or only whitespace); expected text")


def check_text(where: str, row) -> None:
    """Every string of the row is text a tokenizer and a datasets/Arrow reader take: JSON lets lone
    UTF-16 surrogates (``"\\ud800"``) and NUL characters through, and they fail later, far from the file."""
    for key, text in strings(row):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise KitError(
                f"{where} column {key!r} holds {text[e.start : e.end]!r} at character {e.start}, a lone UTF-16 "
                "surrogate (not text); expected valid Unicode"
            ) from None
        if "\0" in text:
            raise KitError(f"{where} column {key!r} holds a NUL character at character {text.index(chr(0))}; expected text")


def strings(value, key: str = ""):
    """(column, string) for every string in a parsed row, keys included."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k, key or k)
            yield from strings(v, key or k)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v, key)


def check_lengths(path: str | Path, columns: tuple[str, str], count_tokens, max_len: int) -> int:
    """The longest row in tokens (``count_tokens(row) -> int``, as training tokenizes it); a row
    longer than ``max_len`` (the model's context) fails here, not mid-epoch inside torchtune."""
    longest = 0
    for lineno, row in numbered_rows(path, columns):
        n = count_tokens(row)
        if n > max_len:
            raise KitError(
                f"dataset file {str(path)!r} line {lineno} is {n} tokens long ({columns[0]!r} + {columns[1]!r} "
                f"in the chat template) but the model's context is {max_len}; expected rows of at most "
                f"{max_len} tokens (shorten or drop it)"
            )
        longest = max(longest, n)
    return longest


def corpus_lines() -> list[str]:
    """Text the tiny tokenizer is trained on: the bundled data plus chat scaffolding."""
    lines = ["user", "assistant", "system", "\n"]
    for name in sorted(p.name for p in BUNDLED.glob("*.jsonl")):
        for row in read_jsonl(BUNDLED / name):
            lines.extend(str(v) for v in row.values())
    return lines
