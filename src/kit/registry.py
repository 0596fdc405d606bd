"""Inspect AI entry point: importing this registers kit's tasks (``kit/parity``, ...)
and model providers (``peft/<adapter>``)."""

from kit.eval import (
    providers,  # noqa: F401
    tasks,  # noqa: F401
)
