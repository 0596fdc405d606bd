"""Inspect tasks bundled with kit (registered as ``kit/<name>`` through the entry point)."""

from kit.eval.tasks.modifiers import last_digit, modifier_mix, reverse
from kit.eval.tasks.parity import parity, parity_long

__all__ = ["last_digit", "modifier_mix", "parity", "parity_long", "reverse"]
