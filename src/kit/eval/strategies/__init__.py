"""Eval strategies (config group ``eval``): one module each, found by this registry.

Each module defines ``STRATEGY`` (a ``kit.eval.strategy.Strategy``) and keeps its heavy imports
inside functions, so listing the strategies loads no model code. Every strategy evaluates a full
checkpoint (``checkpointer=full``) as a plain ``hf`` model.
"""

from __future__ import annotations

from kit.core.errors import KitError
from kit.core.registry import discover
from kit.eval.strategy import Strategy


def get_strategy(name: str) -> Strategy:
    name = str(getattr(name, "value", name))
    if name not in STRATEGIES:
        raise KitError(f"eval strategy {name!r} unknown; expected one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


STRATEGIES: dict[str, Strategy] = discover(__name__, __path__, "STRATEGY", Strategy)
