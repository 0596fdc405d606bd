"""Eval strategies (config group ``eval``): a small registry with lazy imports.

Each strategy is a function ``evaluate(ctx) -> dict`` in its own module; the
registry maps the ``eval.strategy`` name to ``module:function`` so a strategy's
heavy imports load only when it is used. Every strategy evaluates a full
checkpoint (``checkpointer=full``) as a plain ``hf`` model.
"""

from __future__ import annotations

import importlib

from kit.core.errors import KitError

STRATEGIES = {
    "auto": "kit.eval.strategies.auto:evaluate",  # the fastest of the others for this machine and eval (recorded)
    "merge": "kit.eval.strategies.merge:evaluate",  # merge_and_unload -> temporary folder -> hf
    "merge_in_memory": "kit.eval.strategies.merge_in_memory:evaluate",  # merge into the resident base, restore after
    "direct": "kit.eval.strategies.direct:evaluate",  # unmerged PEFT through the peft/ provider
    "vllm": "kit.eval.strategies.vllm:evaluate",  # Inspect's vLLM provider, native LoRA, one server per base
    "none": "kit.eval.strategies.none:evaluate",
}


def get_strategy(name: str):
    if name not in STRATEGIES:
        raise KitError(f"eval strategy {name!r} unknown; expected one of {sorted(STRATEGIES)}")
    module, func = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), func)
