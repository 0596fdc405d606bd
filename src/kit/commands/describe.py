"""``python -m kit describe model=<preset> [model.path=DIR] [--json]``: what a base model is.

Built from ``config.json`` on the meta device (no weights read, no memory used),
so an 8B preset is described in about a second even when only its config.json is
local. ``describe(model)`` gives the same fields for a loaded model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kit.core.cli_parser import OneLineParser
from kit.core.config import compose, one_line
from kit.core.errors import KitError
from kit.core.model.families import family_of, read_config
from kit.core.model.loader import loader_for, meta_model, model_folder
from kit.core.model.resolve import resolve_base

LORA_LAYER_TYPES = ("Linear", "Conv1D")  # module classes PEFT LoRA wraps in these models


def _first(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def lora_targets(model) -> list[str]:
    """Distinct last-name parts of the modules LoRA can target (``q_proj``, ``lm_head``...); not the
    output layer when it is the embedding matrix (tied: a LoRA there would change the embeddings too)."""
    output = model.get_output_embeddings()
    tied_output = output if tied_embeddings(model) else None
    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if name and type(module).__name__ in LORA_LAYER_TYPES and module is not tied_output:
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    return list(seen)


def tied_embeddings(model) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def describe(model) -> dict:
    """Shape, size and LoRA targets of a model (loaded, or on the meta device)."""
    c = model.config
    heads = _first(c, "num_attention_heads", "n_head")
    hidden = _first(c, "hidden_size", "d_model", "n_embd")
    dtypes = {p.dtype for p in model.parameters()}
    on_meta = all(p.device.type == "meta" for p in model.parameters())
    dtype = str(_first(c, "dtype", "torch_dtype", default="")) if on_meta else ",".join(sorted(str(d) for d in dtypes))
    return {
        "model_type": c.model_type,
        "class": type(model).__name__,
        "layers": _first(c, "num_hidden_layers", "num_layers", "n_layer"),
        "heads": heads,
        "kv_heads": _first(c, "num_key_value_heads", default=heads),
        "head_dim": _first(c, "head_dim", default=hidden // heads if hidden and heads else None),
        "hidden": hidden,
        "mlp": _first(c, "intermediate_size", "d_ff", "ffn_dim", "n_inner"),
        "vocab": c.vocab_size,
        "tied_embeddings": tied_embeddings(model),
        "dtype": dtype.replace("torch.", ""),
        "parameters": sum(p.numel() for p in model.parameters()),
        "lora_targets": lora_targets(model),
        "on_meta": on_meta,
    }


def weights_on_disk(path: Path) -> dict:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return {"files": [f.name for f in files], "bytes": sum(f.stat().st_size for f in files)}


def torchtune_family(path: Path) -> dict | None:
    try:
        family = family_of(path)
    except KitError:
        return None
    builder, _ = family.lora_builder(path)
    return {
        "family": family.name,
        "builder": builder,
        "model_type": family.model_type,
        "lora_targets": kit_lora_targets(family, path),
    }


def kit_lora_targets(family, path: Path) -> list[str]:
    """The modules kit's LoRA can train on this model, in Hugging Face's names (every attention
    projection, the MLP, and the output layer unless tied): what ``lora.*`` maps to (Phi: qkv_proj)."""
    c = read_config(path)
    section = {
        "lora_attn_modules": ["q_proj", "k_proj", "v_proj", "output_proj"],
        "apply_lora_to_mlp": True,
        "apply_lora_to_output": not family.tied(c),
        "lora_rank": 1,
        "lora_alpha": 1.0,
    }
    return list(family.peft_config(section)["target_modules"])


def describe_folder(path: Path, loader: str = "auto", trust_remote_code: bool = False) -> dict:

    path = model_folder(path)
    info = describe(meta_model(path, loader, trust_remote_code))
    info.pop("on_meta")
    tt = torchtune_family(path)
    if tt is not None:  # what kit trains, in the module names of this model
        info["lora_targets"] = tt["lora_targets"]
    return {
        "path": str(path),
        "loader": loader_for(path) if loader == "auto" else loader,
        **info,
        "weights": weights_on_disk(path),
        "torchtune": tt,
    }


def _size(n: int, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n:,} ({n / scale:.2f} {suffix}{unit})"
    return f"{n:,}"


def table(info: dict) -> str:
    tt = info["torchtune"]
    weights = info["weights"]
    rows = [
        ("path", info["path"]),
        ("class", f"{info['class']} (loader {info['loader']}, model_type {info['model_type']})"),
        ("layers", info["layers"]),
        ("heads", f"{info['heads']} (kv heads {info['kv_heads']}, head dim {info['head_dim']})"),
        ("hidden size", info["hidden"]),
        ("MLP size", info["mlp"]),
        ("vocab", info["vocab"]),
        ("tied embeddings", "yes" if info["tied_embeddings"] else "no"),
        ("dtype", info["dtype"] or "not set in config.json"),
        ("parameters", _size(info["parameters"])),
        (
            "weights",
            f"{len(weights['files'])} file(s), {_size(weights['bytes'], 'B')}"
            if weights["files"]
            else "none here (config.json only)",
        ),
        ("LoRA targets", " ".join(info["lora_targets"])),
        (
            "torchtune",
            f"family {tt['family']}: {tt['builder']} (model_type {tt['model_type']})"
            if tt
            else "no kit family: kit can load it but not train it",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str]) -> int:

    parser = OneLineParser(prog="kit describe", description="Describe a base model (from its config.json).")
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides of the train config, e.g. model=tiny")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        info = describe_from_overrides(args.overrides)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else table(info))
    return 0


def describe_from_overrides(overrides: list[str]) -> dict:

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise KitError(f"argument {bad[0]!r} is not an override; expected key=value such as model=tiny")
    try:
        cfg = compose("train", overrides)
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise KitError(one_line(e)) from None
    m = cfg.model
    return describe_folder(resolve_base(m, config_only=True), m.loader, m.trust_remote_code)
