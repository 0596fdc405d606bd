"""Bytes measured on a small model, projected to a larger one from parameter counts.

Every projected figure is (bytes per weight measured here) x (weights there), counted on the target's
config.json built on the meta device (no weights read), with the measured job's own settings:
- a base or merged model: the target's dtype (its config's ``torch_dtype``) times its parameters;
- a compressed base: the weights the format quantizes (``kit.core.model.compress.quantizable``, the
  same block settings) times the bytes per quantized weight measured in this job's compressed file,
  the other weights in the target's dtype;
- a LoRA: rank x (in + out) of every linear module of the target whose name the adapter targets,
  times the bytes per LoRA weight of the adapter measured here.
Weights only: safetensors headers (a few bytes per tensor) are left out on both sides.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kit.core.model.compress import SEP, WEIGHTS, quantizable

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # config.json torch_dtype
DTYPE_BYTES |= {
    "F64": 8,
    "F32": 4,
    "BF16": 2,
    "F16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}  # safetensors


def header(path: Path) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, safetensors dtype) of one .safetensors file, read from its header only."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(size))
    return {k: (v["shape"], v["dtype"]) for k, v in meta.items() if k != "__metadata__"}


def tensor_bytes(shape: list[int], dtype: str) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]


def folder_shapes(folder: Path) -> dict[str, tuple[list[int], str]]:
    shapes = {}
    for f in sorted(folder.glob("*.safetensors")):
        shapes |= header(f)
    return shapes


def bytes_per_quantized_weight(compressed: Path, source: Path) -> float:
    """Bytes of a quantized weight's components (blocks, scales) per weight, in this compressed folder."""
    parts = header(compressed / WEIGHTS)
    shapes = folder_shapes(source)
    quantized = {name.split(SEP)[0] for name in parts if SEP in name}
    if not quantized:
        return 0.0
    stored = sum(tensor_bytes(*parts[name]) for name in parts if SEP in name)
    return stored / sum(math.prod(shapes[name][0]) for name in quantized)


def bytes_per_lora_weight(adapter: Path) -> tuple[float, int]:
    """(bytes per LoRA weight, LoRA weights) of a PEFT adapter folder's safetensors."""
    shapes = header(adapter / "adapter_model.safetensors")
    weights = sum(math.prod(s) for s, _ in shapes.values())
    return sum(tensor_bytes(s, d) for s, d in shapes.values()) / weights, weights


def target_dtype_bytes(model) -> int:
    config = model.config  # transformers 4.57 reads config.json's torch_dtype into .dtype (torch_dtype: deprecated)
    dtype = str(getattr(config, "dtype", None) or "float32").replace("torch.", "")
    return DTYPE_BYTES.get(dtype, 4)


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def lora_weights(model, targets: list[str], rank: int) -> int:
    """rank x (in + out) over the model's linear modules whose last name is one of ``targets``."""
    import torch

    tied = model.get_output_embeddings() if model.config.tie_word_embeddings else None
    return sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets and m is not tied
    )


def compressed_bytes(model, fmt: str, block: int, scaler_block: int, per_quantized: float) -> int:
    """The target's weights as ``fmt`` would store them: quantized where the format quantizes."""
    other = target_dtype_bytes(model)
    total = 0.0
    for p in model.parameters():  # tied weights once
        total += p.numel() * (per_quantized if quantizable(p, fmt, block, scaler_block) else other)
    return int(total)


def adapter_targets(adapter: Path) -> tuple[list[str], int]:
    """(target module names, rank) from a PEFT adapter_config.json."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    targets = config["target_modules"]
    return (sorted(targets) if isinstance(targets, list) else [targets]), int(config["r"])
