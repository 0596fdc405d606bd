"""Compressed bases: a model folder's 2-D weights quantized in a declared format, with a manifest.

Formats (``FORMATS``): ``nf4`` (torchao's NF4 tensor, what torchtune's QLoRA trains against),
``int8`` (torchao's int8 weight-only scheme: per-row symmetric), ``gguf_q8_0`` and ``gguf_q4_0``
(the ``gguf`` package's numpy quantizers, GGML block layout). The compressed folder holds
``compressed.safetensors`` (quantized blocks as integer tensors, other tensors as they were), the
source's config and tokenizer files, and ``kit_compress.json`` (the manifest). ``dequantized_state``
gives back exactly the weights a consumer computes with (``dequant(Wq)``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from kit.core.errors import KitError
from kit.core.identity import base_fingerprint, file_sha256

FORMATS = ("nf4", "int8", "gguf_q8_0", "gguf_q4_0")
GGUF_BLOCK = 32  # Q8_0 and Q4_0 blocks: 32 weights and one fp16 scale
MANIFEST = "kit_compress.json"
WEIGHTS = "compressed.safetensors"
SEP = "::"  # tensor name :: component (safetensors keys of a quantized weight)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise KitError(f"phase.compress.format={fmt!r} is not a compression format; expected one of {', '.join(FORMATS)}")
    return fmt


NF4_SCALER_BLOCK = 256  # torchao's and torchtune's default: NF4 quantizes its block scales in groups of 256


def quantizable(t: torch.Tensor, fmt: str, block: int, scaler_block: int = NF4_SCALER_BLOCK) -> bool:
    """2-D float weights whose rows split into whole blocks (norms, biases stay as they are); NF4
    also quantizes its scales in groups of ``scaler_block``, so a weight needs ``block * scaler_block``
    elements per group (a small model's layers need a smaller group than torchtune's 256)."""
    whole = t.numel() % (block * scaler_block) == 0 if fmt == "nf4" else t.shape[-1] % GGUF_BLOCK == 0
    return t.ndim == 2 and t.is_floating_point() and whole


def block_size(fmt: str, nf4_block: int) -> int:
    return nf4_block if fmt == "nf4" else GGUF_BLOCK if fmt.startswith("gguf") else 1


# --- per-format quantize / dequantize: a weight -> {component: tensor} and back -----------------


def _nf4_parts(w: torch.Tensor, block: int, scaler_block: int = NF4_SCALER_BLOCK) -> dict[str, torch.Tensor]:
    from torchao.dtypes.nf4tensor import to_nf4

    q = to_nf4(w.to(torch.bfloat16), block_size=block, scaler_block_size=scaler_block)
    return {
        "quantized_data": q.quantized_data,
        "quantized_scalers": q.quantized_scalers,
        "quantization_factor": q.quantization_factor,
        "scaler_mean": q.scaler_mean.reshape(1),
        "nf4": q.nf4,
    }


def nf4_tensor(parts: dict[str, torch.Tensor], shape: list[int], block: int, scaler_block: int = NF4_SCALER_BLOCK):
    """The torchao NF4Tensor torchtune's ``linear_nf4`` computes with, rebuilt from its stored parts."""
    from torchao.dtypes.nf4tensor import NF4Tensor, SubclassTensorArgs

    meta = SubclassTensorArgs(torch.Size(shape), (shape[1], 1), 0, torch.bfloat16, torch.device("cpu"), False)
    n_blocks = shape[0] * shape[1] // block
    return NF4Tensor(
        meta, block, n_blocks, scaler_block, parts["quantized_scalers"], parts["quantization_factor"],
        parts["scaler_mean"].reshape(()), parts["quantized_data"], parts["nf4"],
    )  # fmt: skip


def _int8_parts(w: torch.Tensor) -> dict[str, torch.Tensor]:
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, quantize_affine

    block = (1, w.shape[1])  # per output row, as torchao's int8 weight-only config
    scale, zero = choose_qparams_affine(w.float(), MappingType.SYMMETRIC, block, torch.int8, eps=torch.finfo(torch.float32).eps)
    q = quantize_affine(w.float(), block, scale, zero, torch.int8)
    return {"qdata": q, "scale": scale}


def _int8_dequant(parts: dict[str, torch.Tensor], shape: list[int]) -> torch.Tensor:
    return parts["qdata"].float() * parts["scale"].reshape(-1, 1)


def _gguf_type(fmt: str):
    from gguf import GGMLQuantizationType

    return {"gguf_q8_0": GGMLQuantizationType.Q8_0, "gguf_q4_0": GGMLQuantizationType.Q4_0}[fmt]


def _gguf_parts(w: torch.Tensor, fmt: str) -> dict[str, torch.Tensor]:
    from gguf.quants import quantize

    blocks = quantize(w.float().numpy(), _gguf_type(fmt))  # uint8 rows, GGML layout
    return {"blocks": torch.from_numpy(blocks.copy())}


def _gguf_dequant(parts: dict[str, torch.Tensor], shape: list[int], fmt: str) -> torch.Tensor:
    from gguf.quants import dequantize

    return torch.from_numpy(dequantize(parts["blocks"].numpy(), _gguf_type(fmt)).reshape(shape).copy())


def quantize_weight(
    w: torch.Tensor, fmt: str, nf4_block: int = 64, nf4_scaler_block: int = NF4_SCALER_BLOCK
) -> dict[str, torch.Tensor]:
    if fmt == "nf4":
        return _nf4_parts(w, nf4_block, nf4_scaler_block)
    if fmt == "int8":
        return _int8_parts(w)
    return _gguf_parts(w, check_format(fmt))


def dequantize_weight(
    parts: dict[str, torch.Tensor], shape: list[int], fmt: str, nf4_block: int = 64, nf4_scaler_block: int = NF4_SCALER_BLOCK
) -> torch.Tensor:
    if fmt == "nf4":
        return nf4_tensor(parts, shape, nf4_block, nf4_scaler_block).get_original_weight().float()
    if fmt == "int8":
        return _int8_dequant(parts, shape)
    return _gguf_dequant(parts, shape, check_format(fmt))


# --- folders ------------------------------------------------------------------------------------


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise KitError(f"no *.safetensors weights in {str(folder)!r}; expected a model folder")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def compress_folder(src: Path, out: Path, fmt: str, nf4_block: int = 64, nf4_scaler_block: int = NF4_SCALER_BLOCK) -> dict:
    """Write ``out`` (a new folder) from the model folder ``src``; returns the manifest."""
    from safetensors.torch import save_file

    check_format(fmt)
    block = block_size(fmt, nf4_block)
    started = time.perf_counter()
    stored, shapes, dtypes = {}, {}, {}
    for name, t in read_state(src).items():
        if quantizable(t, fmt, block, nf4_scaler_block):
            shapes[name], dtypes[name] = list(t.shape), str(t.dtype).removeprefix("torch.")
            parts = quantize_weight(t, fmt, nf4_block, nf4_scaler_block)
            stored.update({f"{name}{SEP}{k}": v.contiguous() for k, v in parts.items()})
        else:
            stored[name] = t.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():  # config, tokenizer, generation config, lineage
        if f.is_file() and f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
    save_file(stored, str(out / WEIGHTS))
    manifest = {
        "format": fmt,
        "method": METHODS[fmt],
        "block_size": block,
        **({"scaler_block_size": nf4_scaler_block} if fmt == "nf4" else {}),
        "source": {"path": str(src), "fingerprint": base_fingerprint(src), "bytes": folder_bytes(src, "*.safetensors")},
        "quantized": shapes,
        "source_dtypes": dtypes,
        "weights": WEIGHTS,
        "sha256": file_sha256(out / WEIGHTS),
        "bytes": (out / WEIGHTS).stat().st_size,
        "compress_s": time.perf_counter() - started,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


METHODS = {
    "nf4": "torchao NF4Tensor (to_nf4 of the bf16 weight), as torchtune's QLoRA (quantize_base=True) computes with",
    "int8": "torchao int8 weight-only: symmetric per-row scale (choose_qparams_affine/quantize_affine)",
    "gguf_q8_0": "gguf.quants.quantize Q8_0 (32-weight blocks, fp16 scale)",
    "gguf_q4_0": "gguf.quants.quantize Q4_0 (32-weight blocks, fp16 scale)",
}


def read_manifest(folder: Path, check_hash: bool = True) -> dict:
    """The manifest of a compressed folder; with ``check_hash`` its weights must be the bytes it names."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise KitError(f"{str(folder)!r} has no {MANIFEST}; expected a folder written by phase=compress")
    manifest = json.loads(path.read_text())
    check_format(manifest["format"])
    if check_hash:
        actual = file_sha256(Path(folder) / manifest["weights"])
        if actual != manifest["sha256"]:
            raise KitError(
                f"{str(folder)!r}: {manifest['weights']} has sha256 {actual[:12]}, its manifest says "
                f"{manifest['sha256'][:12]}; expected the bytes phase=compress wrote"
            )
    return manifest


def dequantized_state(folder: Path) -> dict[str, torch.Tensor]:
    """The compressed folder's weights as a consumer computes with them: ``dequant(Wq)`` per weight."""
    from safetensors.torch import load_file

    manifest = read_manifest(folder)
    stored = load_file(str(Path(folder) / manifest["weights"]))
    fmt, block = manifest["format"], manifest["block_size"]
    state = {k: v for k, v in stored.items() if SEP not in k}
    for name, shape in manifest["quantized"].items():
        parts = {k.split(SEP, 1)[1]: v for k, v in stored.items() if k.startswith(name + SEP)}
        dtype = getattr(torch, manifest["source_dtypes"][name])
        scaler = manifest.get("scaler_block_size", NF4_SCALER_BLOCK)
        state[name] = dequantize_weight(parts, shape, fmt, block if fmt == "nf4" else 64, scaler).to(dtype)
    return state


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in Path(folder).glob(pattern) if f.is_file())


def zstd_bytes(path: Path, level: int = 3) -> int | None:
    """Bytes of ``path`` zstd-compressed (None when ``zstandard`` is not installed)."""
    try:
        import zstandard
    except ImportError:
        return None
    with open(path, "rb") as f:
        return len(zstandard.ZstdCompressor(level=level).compress(f.read()))


def write_dequantized(folder: Path, out: Path) -> Path:
    """A plain model folder of ``dequant(Wq)`` (source dtypes): a base later phases load as any other,
    computing with exactly the compressed weights (its ``kit_compress.json`` names what it came from)."""
    from safetensors.torch import save_file

    manifest = read_manifest(folder)
    state = {k: v.contiguous() for k, v in dequantized_state(folder).items()}
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(folder).iterdir():
        if f.is_file() and f.name not in (manifest["weights"], MANIFEST):
            shutil.copy2(f, out / f.name)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / MANIFEST).write_text(json.dumps({**manifest, "dequantized_from": str(folder)}, indent=2))
    return out
