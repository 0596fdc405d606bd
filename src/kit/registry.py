"""Inspect AI entry point: importing this registers kit's tasks (``kit/parity``, ...)
and model providers (``peft/<adapter>``)."""

from kit.stages import providers  # noqa: F401
from kit.stages import inspect_tasks  # noqa: F401
