"""Inspect AI entry point: importing this registers kit's tasks (``kit/parity``, ...)
and model providers (``peft/<adapter>``)."""

from kit.stages import (
    inspect_tasks,  # noqa: F401
    providers,  # noqa: F401
)
