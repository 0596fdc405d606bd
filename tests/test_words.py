"""Words that are true: every path the code, the docs and the tests name exists, and nothing cites a
document that is not in the repository (issue trackers, design notes, notes kept elsewhere)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"(?<![\w/.])((?:src/)?kit/[\w/]+(?:\.py|\.yaml|/)?)(?!\w)")
CITATION = re.compile(r"\bissue \d+|\b[Dd]esign notes?\b|\bNOTES\.md\b")
SUFFIXES = (".py", ".md", ".yaml", ".toml", ".sh")


def texts() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    return [ROOT / f for f in listed if f.endswith(SUFFIXES) and "bundled" not in f and (ROOT / f).is_file()]


def task_names() -> set[str]:
    """Inspect task names (``kit/parity``) look like paths but are registry names."""
    from inspect_ai._util.registry import registry_find, registry_info

    import kit.registry  # noqa: F401  (registers kit's tasks)

    return {registry_info(task).name for task in registry_find(lambda info: info.type == "task")}


def stale_paths(lines: dict[str, str], tasks: set[str]) -> list[str]:
    bad = []
    for where, line in lines.items():
        for ref in PATH.findall(line):
            if ref in tasks or (ROOT / ref).exists() or (ROOT / "src" / ref).exists():
                continue
            bad.append(f"{where}: {ref}")
    return bad


def all_lines() -> dict[str, str]:
    return {f"{p.relative_to(ROOT)}:{n}": line for p in texts() for n, line in enumerate(p.read_text().splitlines(), 1)}


def others() -> dict[str, str]:
    """Every line but this file's own (its examples are meant to fail)."""
    return {w: line for w, line in all_lines().items() if not w.startswith(f"tests/{Path(__file__).name}:")}


def test_every_named_path_exists():
    assert stale_paths(others(), task_names()) == []


def test_nothing_cites_a_document_outside_the_repository():
    assert [w for w, line in others().items() if CITATION.search(line)] == []


def test_the_checks_can_fail():
    lines = {"a.py:1": "see kit/launcher.py and kit/core/jobdir.py", "b.md:2": "as issue 15 says"}
    assert stale_paths(lines, set()) == ["a.py:1: kit/launcher.py"]
    assert [w for w, line in lines.items() if CITATION.search(line)] == ["b.md:2"]
