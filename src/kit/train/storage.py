"""What a job would have stored with the other checkpointer: an estimate, never a measurement.

- ``adapter`` job -> ``full``: the base's parameter count (read from its safetensors
  headers, no weights loaded) x bytes per parameter of the dtype torchtune saves in
  (the training dtype). Config and tokenizer files are not counted.
- ``full`` job -> ``adapter``: the parameter count of the PEFT adapter kit would export for
  the same model and LoRA settings: torchtune's own builder on the meta device, its LoRA
  weights through the family's export conversion (Phi's fused q/k/v and gate/up LoRA is
  larger than the separate ones: zero blocks), x bytes per parameter.

What the job did store (checkpoint and job dir bytes) is measured on disk (kit.train.export).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from omegaconf import DictConfig

from kit.core.device import DTYPES
from kit.core.model.families import family_of, read_config
from kit.core.model.qlora import is_qlora, plain_section
from kit.train.recipe_config import model_section


def safetensors_numel(path: Path) -> int:
    """Parameter count of a safetensors file, from its JSON header only."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    count = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for dim in info["shape"]:
                n *= dim
            count += n
    return count


def base_numel(base: Path) -> int | None:
    files = sorted(base.glob("*.safetensors"))
    return sum(safetensors_numel(f) for f in files) if files else None  # pickles: no header to read


def lora_numel(cfg: DictConfig, base: Path) -> int:
    """Parameters of the PEFT adapter this job exports, counted without memory: torchtune's
    builder on the meta device, its LoRA weights through the family's export conversion."""
    import importlib

    import torch

    family = family_of(base)
    section = model_section(cfg, family, base)
    if is_qlora(section):  # the same LoRA weights; NF4 cannot be built on the meta device
        section = plain_section(section)
    module, _, name = section.pop("_component_").rpartition(".")
    with torch.device("meta"):
        model = getattr(importlib.import_module(module), name)(**section)
    lora = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    return sum(t.numel() for t in family.tune_to_peft_adapter(lora, read_config(base)).values())


def other_checkpointer(
    cfg: DictConfig, base: Path, dtype: str, kept: str | None = None, adapter_dtype: str | None = None
) -> dict | None:
    """The other checkpointer's checkpoint bytes for this job, and how they were estimated.

    ``kept``: the kind of checkpoint the job kept (default ``checkpointer.kind``); a
    ``phase.merge`` job keeps a full model although it trained with the adapter checkpointer.
    ``adapter_dtype``: the LoRA weights' dtype when it differs from the training dtype.
    """
    kept = kept or getattr(cfg.checkpointer.kind, "value", cfg.checkpointer.kind)
    if kept == "full":  # the other checkpointer stores the adapter, in the LoRA weights' dtype
        dtype = adapter_dtype or dtype
    if dtype not in DTYPES:
        return None
    per_param = DTYPES[dtype].bytes
    if kept == "adapter":
        numel = base_numel(base)
        if numel is None:
            return None
        how = f"estimate from the base's size: {numel} parameters (safetensors headers) x {per_param} bytes ({dtype})"
        return {"kind": "full", "checkpoint_bytes": numel * per_param, "how": how}
    numel = lora_numel(cfg, base)
    how = f"estimate from the LoRA shapes: {numel} parameters (rank x (in + out) per target) x {per_param} bytes ({dtype})"
    return {"kind": "adapter", "checkpoint_bytes": numel * per_param, "how": how}
