"""Inspect AI entry point: importing this registers kit's tasks (``kit/parity``)."""

from kit.inspect_tasks import parity  # noqa: F401
