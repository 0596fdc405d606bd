"""Inspect AI entry point: importing this registers kit's tasks (``kit/parity``, ...)
and model providers (``peft/<adapter>``)."""

from kit import providers  # noqa: F401
from kit.inspect_tasks import modifiers, parity  # noqa: F401
