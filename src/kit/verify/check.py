"""What a verify check is, as the registry in ``kit.verify`` lists it: each check module defines
``CHECK = VerifyCheck(...)``; a new check is its module and its value in ``kit.core.schema.Check``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class VerifyCheck:
    name: str  # as verify.checks lists it
    run: Callable[..., dict]  # check(ctx: VerifyContext) -> {"passed", "figures", "tolerance", "detail"}
    what: str  # one line: what it compares
    needs_inspect: bool = False  # runs Inspect evals (skipped after training with eval=none)
