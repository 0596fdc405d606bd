"""Device and dtype: the one table of kit's dtype names and how ``auto`` resolves.

kit's own names are the short ones torchtune uses (``fp32``, ``bf16``, ``fp16``);
the long torch names (``float32``, ...) are accepted everywhere as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.core.errors import KitError


@dataclass(frozen=True)
class DtypeInfo:
    short: str  # kit's and torchtune's name
    torch_name: str  # attribute of the torch module
    bytes: int  # per parameter


DTYPES = {
    d.short: d for d in (DtypeInfo("fp32", "float32", 4), DtypeInfo("bf16", "bfloat16", 2), DtypeInfo("fp16", "float16", 2))
}
ALIASES = {**{d.short: d.short for d in DTYPES.values()}, **{d.torch_name: d.short for d in DTYPES.values()}}


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): cuda when a GPU is there, else cpu; anything else as given."""
    if device not in (None, "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_info(dtype: str) -> DtypeInfo:
    """The table row of a concrete dtype name (short or long); one-line error otherwise."""
    short = ALIASES.get(str(dtype))
    if short is None:
        raise KitError(f"dtype {dtype!r} unknown; expected one of {['auto', *ALIASES]}")
    return DTYPES[short]


def resolve_dtype(dtype: str | None, device: str) -> str:
    """kit's short dtype name; ``auto`` = bf16 on a CUDA device that supports it, else fp32."""
    if dtype not in (None, "auto"):
        return dtype_info(dtype).short
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16"
    return "fp32"


def torch_dtype(dtype: str, device: str = "cpu"):
    """The ``torch.dtype`` for a kit dtype name (``auto`` resolved for the device)."""
    import torch

    return getattr(torch, DTYPES[resolve_dtype(dtype, device)].torch_name)
