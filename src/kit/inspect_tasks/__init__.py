"""Inspect tasks bundled with kit (registered as ``kit/<name>`` through the entry point)."""

from kit.inspect_tasks.parity import parity, parity_long

__all__ = ["parity", "parity_long"]
