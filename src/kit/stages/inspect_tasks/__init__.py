"""Inspect tasks bundled with kit (registered as ``kit/<name>`` through the entry point)."""

from kit.stages.inspect_tasks.modifiers import last_digit, modifier_mix, reverse
from kit.stages.inspect_tasks.parity import parity, parity_long

__all__ = ["last_digit", "modifier_mix", "parity", "parity_long", "reverse"]
