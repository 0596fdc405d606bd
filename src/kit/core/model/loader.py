"""Load a base model from a local folder: the one place training, eval, verify and
serving get a ``transformers`` model from.

``loader="auto"`` reads the folder's ``config.json`` and picks the Auto class
(``causal_lm`` | ``seq2seq_lm`` | ``masked_lm``). Everything is local:
``from_pretrained`` runs with ``local_files_only=True``; fetching a hub model is
kit.core.model.resolve's job (offline unless allowed). Safetensors only unless
``allow_pickle``; ``trust_remote_code`` off unless asked.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kit.core.device import resolve_device, torch_dtype
from kit.core.errors import KitError
from kit.core.model.families import load_args as family_load_args
from kit.core.model.families import read_config, weight_files
from kit.core.model.resolve import resolve_base

# loader name -> transformers Auto class
LOADERS = {
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "masked_lm": "AutoModelForMaskedLM",
}


def _auto_tables() -> dict[str, dict]:
    """loader -> transformers' {model_type: class name} table for its Auto class."""
    from transformers.models.auto import modeling_auto as m

    return {
        "causal_lm": m.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "seq2seq_lm": m.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        "masked_lm": m.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    }


def supported_model_types() -> dict[str, list[str]]:
    """model_types the installed transformers maps to each loader's Auto class."""
    return {loader: sorted(table) for loader, table in _auto_tables().items()}


def _by_architecture(architectures: list[str]) -> str | None:
    """The checkpoint's own class name is the best evidence of what it is."""
    for arch in architectures:
        for loader, table in _auto_tables().items():
            if any(arch == c or (isinstance(c, tuple) and arch in c) for c in table.values()):
                return loader
    return None


def loader_for(config: dict | Path) -> str:
    """Pick the loader from config.json: ``architectures`` first, then ``model_type``.

    Encoders such as BERT also have a causal-LM head class in transformers, so a
    model_type in both the masked-LM and causal-LM tables counts as masked_lm.
    """
    if isinstance(config, (str, Path)):
        config = read_config(Path(config))
    supported = supported_model_types()
    found = _by_architecture(config.get("architectures") or [])
    if found:
        return found
    model_type = config.get("model_type")
    if config.get("is_encoder_decoder") and model_type in supported["seq2seq_lm"]:
        return "seq2seq_lm"
    for loader in ("masked_lm", "causal_lm", "seq2seq_lm"):
        if model_type in supported[loader]:
            return loader
    listed = "; ".join(f"{name}: {', '.join(types)}" for name, types in supported.items())
    raise KitError(
        f"model_type {model_type!r} (architectures {config.get('architectures')}) is not supported "
        f"by any kit loader; expected a model_type of {listed}"
    )


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, dtype):
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise KitError("load_in_4bit and load_in_8bit are both set; expected at most one")
    import torch

    what = "load_in_4bit" if load_in_4bit else "load_in_8bit"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise KitError(f"{what} needs bitsandbytes, which is not installed; `pip install bitsandbytes` or unset {what}")
    if not torch.cuda.is_available():
        raise KitError(f"{what} needs a CUDA GPU (bitsandbytes) and none is visible; unset {what}")
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def model_folder(path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise KitError(f"model folder {str(path)!r} does not exist; expected a local Hugging Face model folder")
    if not (path / "config.json").is_file():
        raise KitError(
            f"{str(path)!r} is not a model folder (no config.json); expected a local Hugging Face "
            "model folder (fetch one with `huggingface-cli download <id> --local-dir DIR`)"
        )
    return path


def meta_model(path: Path, loader: str = "auto", trust_remote_code: bool = False):
    """The model built from config.json with no weights: parameters live on ``meta`` (no memory used)."""
    import torch
    import transformers

    name = loader_for(path) if loader == "auto" else loader
    config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    with torch.device("meta"):
        return getattr(transformers, LOADERS[name]).from_config(config, trust_remote_code=trust_remote_code)


def load_model(
    path,
    *,
    loader: str = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    device_map=None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
):
    """A local model folder -> a ``PreTrainedModel`` in eval mode on ``device``
    (or placed by ``device_map``; quantized models are placed by ``device_map``)."""
    import transformers

    path = model_folder(path)
    name = loader_for(path) if loader == "auto" else loader
    if name not in LOADERS:
        raise KitError(f"model.loader {loader!r} unknown; expected one of {['auto', *LOADERS]}")
    device = resolve_device(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise KitError(f"device {device!r} asked for but CUDA is not available; expected cpu or auto")
    torch_type = torch_dtype(dtype, device)
    quant = quantization_config(load_in_4bit, load_in_8bit, torch_type)
    files = weight_files(path, allow_pickle)
    kwargs = dict(
        dtype=torch_type,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        use_safetensors=files[0].endswith(".safetensors"),
        revision=revision,
        cache_dir=cache_dir,
    )
    attn_implementation = attn_implementation or family_load_args(path).get("attn_implementation")
    if attn_implementation:  # Gemma 2: eager, the attention that applies its soft-capping
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        device_map = device_map or "auto"
    if device_map is not None:
        kwargs["device_map"] = device_map
    auto_class = getattr(transformers, LOADERS[name])
    try:
        model = auto_class.from_pretrained(str(path), **kwargs)
    except ValueError as e:  # e.g. a model class the Auto class does not know
        why = str(e).splitlines()[0]
        if "custom code" in why:
            why = "it ships custom code, which kit runs only with model.trust_remote_code=true"
        raise KitError(f"cannot load {str(path)!r} with loader {name!r}: {why}") from None
    if device_map is None:
        model.to(device)
    return model.eval()


def load_args(model_cfg) -> dict:
    """The load arguments a ``model`` config node sets."""
    keys = (
        "loader",
        "dtype",
        "device_map",
        "attn_implementation",
        "trust_remote_code",
        "allow_pickle",
        "revision",
        "cache_dir",
        "load_in_4bit",
        "load_in_8bit",
    )
    args = {k: model_cfg[k] for k in keys if k in model_cfg and model_cfg[k] is not None}
    if "device_map" in args and not isinstance(args["device_map"], str):
        from omegaconf import OmegaConf

        args["device_map"] = OmegaConf.to_container(args["device_map"])
    return args


def load_model_from_config(model_cfg, **overrides):
    """``load_model`` for the ``model`` config node: path via kit.core.model.resolve.resolve_base."""

    return load_model(resolve_base(model_cfg), **{**load_args(model_cfg), **overrides})


def load_tokenizer(path, trust_remote_code: bool = False):
    """The folder's tokenizer; without a chat template of its own it carries kit's plain prompt
    format (kit.core.model.prompt_format), the one training used and Inspect renders."""
    from transformers import AutoTokenizer

    from kit.core.model.prompt_format import attach

    folder = str(model_folder(path))
    return attach(AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True))
