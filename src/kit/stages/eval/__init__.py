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
    "auto": "kit.stages.eval.auto:evaluate",  # the fastest of the others for this machine and eval (recorded)
    "merge": "kit.stages.eval.merge:evaluate",  # merge_and_unload -> temporary folder -> hf
    "merge_in_memory": "kit.stages.eval.merge_in_memory:evaluate",  # merge into the resident base, restore after
    "direct": "kit.stages.eval.direct:evaluate",  # unmerged PEFT through the peft/ provider
    "vllm": "kit.stages.eval.vllm:evaluate",  # Inspect's vLLM provider, native LoRA, one server per base
    "none": "kit.stages.eval.none:evaluate",
}


def get_strategy(name: str):
    if name not in STRATEGIES:
        raise KitError(f"eval strategy {name!r} unknown; expected one of {sorted(STRATEGIES)}")
    module, func = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), func)
