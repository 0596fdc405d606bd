"""The training run's own model, kept so that ``verify`` can compare against it.

torchtune trains ``base + LoRA`` as its own modules; kit's export converts the
LoRA weights to a PEFT adapter (the family's conversion: torchtune's plus kit's fixes).
To check that conversion, each job keeps the epoch's adapter in torchtune's own
names (``verify/torchtune_adapter.safetensors``, the size of the adapter), and
``tune_model`` rebuilds the training model from ``torchtune.yaml``: the same
builder and arguments, the base weights converted the way torchtune's
checkpointer loads them, and that adapter. This is cheaper than storing
reference logits (a 128k vocabulary makes those larger than the adapter) and
lets ``kit verify`` re-check a job at any time.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.core.errors import KitError
from kit.core.jobdir import JobDir, as_job
from kit.core.model.families import _call, family_of, read_config, weight_files

TUNE_ADAPTER = Path("verify") / "torchtune_adapter.safetensors"


def keep_torchtune_adapter(epoch_dir: Path, job_dir: JobDir | Path) -> Path:
    """Copy torchtune's own-format adapter (``adapter_model.pt``) into the job as safetensors.

    The ``.pt`` was written by this job's recipe a moment ago, and
    ``weights_only=True`` unpickles tensors only, so loading it is safe.
    """
    import torch
    from safetensors.torch import save_file

    source = epoch_dir / "adapter_model.pt"
    if not source.is_file():
        raise KitError(f"torchtune wrote no adapter_model.pt in {str(epoch_dir)!r}; expected its LoRA weights")
    state = torch.load(source, map_location="cpu", weights_only=True)
    out = as_job(job_dir).output(TUNE_ADAPTER.parts[0]) / TUNE_ADAPTER.name
    out.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata={"format": "pt"})
    return out


def model_section(job_dir: Path) -> dict:
    """The ``model`` section of the job's torchtune recipe config (builder + LoRA settings)."""
    from omegaconf import OmegaConf

    path = job_dir / "torchtune.yaml"
    if not path.is_file():
        raise KitError(f"{str(path)!r} is missing; expected the torchtune config kit saves in every job dir")
    return OmegaConf.to_container(OmegaConf.load(path).model, resolve=True)


def tune_model(section: dict, base: Path, tune_adapter: Path, dtype):
    """torchtune's LoRA model as the training run built it, with the epoch's adapter."""
    from safetensors.torch import load_file

    args = dict(section)
    model = _call(args.pop("_component_"), **args)
    family = family_of(base)
    state = {}
    for name in weight_files(base):
        state.update(load_file(base / name))
    state = family.hf_to_tune(state, read_config(base))
    state.update(load_file(tune_adapter))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise KitError(
            f"{str(tune_adapter)!r} does not fit the model of torchtune.yaml (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); expected this job's torchtune adapter"
        )
    return to_dtype(model, dtype).eval()


def to_dtype(model, dtype):
    """``model.to(dtype)``, except a QLoRA model's NF4 base weights (kit.core.model.qlora): torchao
    would re-quantize them in ``dtype``, and they already compute in the activations' dtype."""
    import torch

    from kit.core.model.qlora import nf4_weights

    if not nf4_weights(model):
        return model.to(dtype)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and type(tensor) in (torch.Tensor, torch.nn.Parameter):
            tensor.data = tensor.data.to(dtype)
    return model


def peft_adapter_from_tune(section: dict, base: Path, tune_adapter: Path, out: Path) -> Path:
    """A PEFT adapter folder from the torchtune adapter, through kit's export conversion
    (``Family.tune_to_peft_adapter``, ``Family.peft_config``); used when the job kept a full model only."""
    from safetensors.torch import load_file, save_file

    family = family_of(base)
    weights = family.tune_to_peft_adapter(load_file(tune_adapter), read_config(base))
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, out / "adapter_model.safetensors", metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(family.peft_config(section, base), indent=2))
    return out
