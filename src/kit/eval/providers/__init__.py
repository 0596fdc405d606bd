"""Inspect AI model providers kit registers (entry point ``inspect_ai = kit.stages.registry``).

Each provider is a factory that imports its heavy class lazily, as Inspect's own
providers do, so importing kit's registry costs nothing.
"""

from inspect_ai.model import modelapi

from kit.eval.providers import batching
from kit.eval.providers.peft_api import PeftAPI

batching.install()  # Inspect's hf/ and kit's peft/ batch without Inspect's 2 s + 1 s waits


@modelapi(name="peft")
def peft():

    return PeftAPI
