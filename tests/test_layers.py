"""The module graph: layers depend only downward and no import loop exists.

Layers (``CONTRIBUTING.md``), bottom to top: ``kit.core`` < ``kit.lora`` < ``kit.train`` < ``kit.eval`` <
``kit.verify`` < ``kit.runtime`` < ``kit.job`` < ``kit.sweep`` < ``kit.commands`` < the entry points
(``kit.__main__``, ``kit.registry``, ``kit`` itself). Every import of a
kit module counts, also those inside functions, since they are what make a loop at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kit

SRC = Path(kit.__file__).parent
LAYERS = {
    name: n
    for n, name in enumerate(
        ("kit.core", "kit.lora", "kit.train", "kit.eval", "kit.verify", "kit.runtime", "kit.job", "kit.sweep", "kit.commands")
    )
}
TOP = len(LAYERS)  # kit, kit.__main__, kit.registry: entry points


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    return next((n for prefix, n in LAYERS.items() if module == prefix or module.startswith(prefix + ".")), TOP)


def kit_imports(path: Path, modules: set[str]) -> set[str]:
    """Every kit module ``path`` imports (resolving ``from kit.x import y`` to ``kit.x.y`` when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kit") and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py") if "bundled" not in p.parts}
    return {m: kit_imports(p, set(files)) - {m} for m, p in files.items()}


def test_every_layer_is_known():
    assert {layer(m) for m in graph()} == set(range(TOP + 1))


def test_no_upward_import():
    upward = sorted(
        f"{m} (layer {layer(m)}) -> {d} (layer {layer(d)})"
        for m, deps in graph().items()
        for d in deps
        if layer(d) > layer(m) and not m.startswith(d + ".")
    )  # a package's __init__ may be imported by its modules
    assert upward == []


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_loop():
    # a package imports its own submodules from __init__ (a registry); that edge is not a loop
    g = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph().items()}
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_the_checker_finds_a_loop():
    """The checks above can fail: a planted loop and a planted upward import are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert layer("kit.core.jobdir") < layer("kit.job.pipeline") < layer("kit.commands.train") < layer("kit.__main__")


def test_public_api_resolves():
    """Every name kit exports exists where kit says it does."""
    missing = [name for name in kit.__all__ if getattr(kit, name, None) is None]
    assert missing == []
