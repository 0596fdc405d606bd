"""QLoRA over an ``nf4`` compressed base: torchtune's LoRA layers computing over torchao NF4 weights.

A base written by ``phase=compress phase.compress.format=nf4 phase.compress.dequantized=true`` is a
plain model folder of ``dequant(Wq)`` with the manifest (``kit_compress.json``) of the NF4 tensors it
came from. Training on it builds the family's own LoRA model and then turns the base weight of every
``LoRALinear`` the compressed base quantized into an NF4 tensor with the manifest's block sizes: the
same switch torchtune's ``quantize_base=True`` makes (``LoRALinear._quantize_base``, ``linear_nf4``),
but with the block sizes of the compressed base, which torchtune's builders do not pass on (they fix
torchao's default 256 scales per group, more than a small model's layers hold). When the recipe loads
``dequant(Wq)`` into those weights, torchao re-quantizes it; kit.train.recipes checks the result
computes with exactly ``dequant(Wq)``, so the adapter trains against the weights it is later
evaluated, served and merged over.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from kit.core.errors import KitError

MANIFEST = "kit_compress.json"  # kit.core.model.compress.MANIFEST (that module imports torch)
NF4_SCALER_BLOCK = 256  # kit.core.model.compress.NF4_SCALER_BLOCK

BUILDER = "kit.core.model.qlora.qlora"


def is_qlora(section) -> bool:
    """A recipe ``model`` section that builds kit's QLoRA model (kit.train.recipe_config)."""
    return section.get("_component_") == BUILDER


def plain_section(section: dict) -> dict:
    """The family's own LoRA section inside a QLoRA one: the same LoRA weights, no NF4 settings."""
    plain = {k: v for k, v in section.items() if not k.startswith("nf4_") and k != "lora_builder"}
    return {**plain, "_component_": section["lora_builder"]}


def read_base_manifest(base: Path) -> dict | None:
    """The compress manifest of a model folder written as ``dequant(Wq)`` (None: a plain base)."""
    path = Path(base) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if "dequantized_from" in manifest else None


def nf4_settings(base: Path) -> dict | None:
    """The QLoRA builder's arguments for an ``nf4`` dequantized base (None for any other base)."""
    manifest = read_base_manifest(base)
    if manifest is None or manifest["format"] != "nf4":
        return None
    source = Path(manifest["dequantized_from"])
    return {
        "nf4_block_size": int(manifest["block_size"]),
        "nf4_scaler_block_size": int(manifest.get("scaler_block_size", NF4_SCALER_BLOCK)),
        "nf4_source": str(source) if (source / MANIFEST).is_file() else None,
    }


def base_precision(base: Path) -> str:
    """``nf4`` / ``int8`` / ... for a dequantized compressed base, else ``full`` (its own weights)."""
    manifest = read_base_manifest(base)
    return manifest["format"] if manifest else "full"


def value_key(t) -> str:
    """A weight's identity by value (its bf16 bytes: every dequant(Wq) of NF4 is a bf16 value)."""
    import hashlib

    import torch

    data = t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    return f"{tuple(t.shape)}:{hashlib.sha256(data).hexdigest()}"


def stored_nf4(folder: str) -> dict:
    """{value_key(dequant(Wq)): the NF4Tensor phase=compress stored} for a compressed folder: matched
    by value, since torchtune's names (and for some families its layout) differ from the stored ones."""
    from safetensors.torch import load_file

    from kit.core.model.compress import SEP, nf4_tensor, read_manifest

    manifest = read_manifest(Path(folder))
    tensors = load_file(str(Path(folder) / manifest["weights"]))
    found = {}
    for name, shape in manifest["quantized"].items():
        parts = {k.split(SEP, 1)[1]: v for k, v in tensors.items() if k.startswith(name + SEP)}
        weight = nf4_tensor(parts, shape, manifest["block_size"], manifest.get("scaler_block_size", NF4_SCALER_BLOCK))
        found[value_key(weight.get_original_weight())] = weight
    return found


def qlora(*, lora_builder: str, nf4_block_size: int, nf4_scaler_block_size: int, nf4_source: str | None = None, **args):
    """``lora_builder(**args)`` (the family's torchtune LoRA model) with NF4 base weights in every
    LoRALinear whose size the block sizes divide (the others keep their weights: the compressed base
    stored those unquantized too). ``nf4_source``: the compressed folder whose NF4 tensors are loaded
    as they are stored (torchao's re-quantization of dequant(Wq) does not always give Wq back)."""
    import torch
    from torchao.dtypes.nf4tensor import to_nf4
    from torchtune.modules.common_utils import reparametrize_as_dtype_state_dict_post_hook
    from torchtune.modules.peft import LoRALinear

    from kit.core.model.families import _call

    model = _call(lora_builder, **args)
    group = nf4_block_size * nf4_scaler_block_size
    count = 0

    def quantize(w):  # as phase=compress quantized the base: the bf16 weight (kit.core.model.compress)
        return to_nf4(w.detach().to(torch.bfloat16), block_size=nf4_block_size, scaler_block_size=nf4_scaler_block_size)

    stored = stored_nf4(nf4_source) if nf4_source else {}

    def load_as_nf4(module, state_dict, prefix, *_):
        # dequant(Wq) arrives in the model's dtype (in torchtune's names): the compressed base's own NF4
        # tensor of those values, else quantized as compress did (check_trains_on proves the result)
        key = prefix + "weight"
        if key in state_dict and not isinstance(state_dict[key], type(module.weight)):
            found = stored.get(value_key(state_dict[key]))
            state_dict[key] = found if found is not None else quantize(state_dict[key])

    for module in model.modules():
        if isinstance(module, LoRALinear) and module.weight.numel() % group == 0:
            module.weight = torch.nn.Parameter(quantize(module.weight), requires_grad=False)
            module._quantize_base = True  # torchtune's QLoRA forward: linear_nf4 over the NF4 weight
            module._register_load_state_dict_pre_hook(load_as_nf4, with_module=True)
            count += 1
    if count == 0:
        raise KitError(
            f"no LoRA layer of this model splits into NF4 groups of {nf4_block_size} x {nf4_scaler_block_size} "
            "weights; expected phase.compress.nf4_block_size / nf4_scaler_block_size that divide its layers"
        )
    # as torchtune's QLoRA builders: state_dict() gives the NF4 weights back in the model's dtype
    dtype = model.tok_embeddings.weight.dtype
    model._register_state_dict_hook(partial(reparametrize_as_dtype_state_dict_post_hook, dtype=dtype, offload_to_cpu=True))
    return model


def nf4_weights(model) -> dict:
    """{torchtune parameter name: NF4Tensor} of a QLoRA model's quantized base weights."""
    from torchao.dtypes.nf4tensor import NF4Tensor

    return {name: p for name, p in model.named_parameters() if isinstance(p, NF4Tensor)}


def check_trains_on(model, loaded: dict) -> int:
    """Every NF4 weight of ``model`` computes with exactly the tensor the recipe loaded into it
    (``dequant(Wq)``): torchao's re-quantization of an NF4 value must give it back. Returns how many."""
    import torch

    weights = nf4_weights(model)
    for name, weight in weights.items():
        want = loaded[name]
        got = weight.get_original_weight().to(want.dtype)
        if not torch.equal(got, want):
            diff = (got.float() - want.float()).abs().max().item()
            raise KitError(
                f"QLoRA weight {name} is not the base's dequant(Wq) after torchao's NF4 load (max diff {diff:.3g}); "
                "expected the nf4 base phase=compress wrote, with its block sizes"
            )
    return len(weights)


# --- the merge guard: an adapter trained over dequant(Wq) merges into dequant(Wq) only ----------

TRAINED_ON = "kit_trained_on.json"  # in an adapter folder trained on a compressed base


def record_trained_on(adapter: Path, base: Path) -> dict | None:
    """Write ``<adapter>/kit_trained_on.json`` when ``base`` is a compressed base (None otherwise):
    the base's path, precision and fingerprint, which every merge of this adapter is checked against."""
    from kit.core.identity import base_fingerprint

    manifest = read_base_manifest(base)
    if manifest is None:
        return None
    trained_on = {
        "path": str(base),
        "precision": manifest["format"],
        "fingerprint": base_fingerprint(base),
        "source_fingerprint": manifest["source"]["fingerprint"],  # the full-precision model it was compressed from
    }
    (Path(adapter) / TRAINED_ON).write_text(json.dumps(trained_on, indent=2))
    return trained_on


def check_merge_target(adapter: Path, target: Path) -> None:
    """Refuse, in one line, to merge an adapter trained on a compressed base into any other base.

    Trained over ``dequant(Wq)``, its merge belongs in ``dequant(Wq)``; merged into the source's full-
    precision W it also adds ``W - dequant(Wq)``, an error it never saw (QLoRA's "merge corruption")."""
    from kit.core.identity import base_fingerprint

    path = Path(adapter) / TRAINED_ON
    if not path.is_file():
        return
    trained_on = json.loads(path.read_text())
    fingerprint = base_fingerprint(target)
    if fingerprint == trained_on["fingerprint"]:
        return
    source = fingerprint == trained_on["source_fingerprint"]
    what = "its full-precision source" if source else f"another base, {base_precision(target)} precision"
    raise KitError(
        f"adapter {str(adapter)!r} was trained on the {trained_on['precision']} base {trained_on['path']!r} "
        f"(dequant(Wq), fingerprint {trained_on['fingerprint'][:12]}); merging it into {str(target)!r} "
        f"({what}, fingerprint {fingerprint[:12]}) would add the quantization error it never "
        f"saw; expected that {trained_on['precision']} base (model.path={trained_on['path']})"
    )
