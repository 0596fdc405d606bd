"""torchtune checkpointers for the families torchtune 0.6.1 does not know, or maps wrong.

Each is torchtune's ``FullModelHFCheckpointer`` with the family's key table completed or corrected
first; everything else (reading shards, the merged full model, the PEFT adapter, the copied
tokenizer and config files) is torchtune's own code. The recipe config names it as its
``checkpointer``, so ``tune run ... --config <job>/torchtune.yaml`` replays the job with kit installed.

- ``Qwen3HFCheckpointer`` (model_type ``QWEN2``): torchtune's Qwen2 table plus Qwen3's q/k norms.
- ``Gemma2HFCheckpointer`` (model_type ``GEMMA2``): the Gemma 2 table with its two MLP norms put
  where Hugging Face applies them (torchtune 0.6.1 swaps them).
"""

from __future__ import annotations

from torchtune.training import FullModelHFCheckpointer

from kit.core.model.families.gemma2 import fix_norm_keys
from kit.core.model.families.qwen3 import with_norm_keys


class Qwen3HFCheckpointer(FullModelHFCheckpointer):
    def __init__(self, *args, **kwargs):
        with_norm_keys()
        super().__init__(*args, **kwargs)


class Gemma2HFCheckpointer(FullModelHFCheckpointer):
    def __init__(self, *args, **kwargs):
        fix_norm_keys()
        super().__init__(*args, **kwargs)
