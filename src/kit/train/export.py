"""Checkpointers: move torchtune's epoch output into the job dir's fixed layout.

``full``    -> ``hf_model/``: the merged model shards + config/tokenizer files.
``adapter`` -> ``adapter/``: ``adapter_model.safetensors`` + ``adapter_config.json``.

Never both in one folder: transformers treats a folder holding
``adapter_config.json`` as an adapter. torchtune's pickled ``adapter_model.pt``
is dropped (kit loads safetensors only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kit.core.errors import KitError
from kit.core.jobdir import JobDir, as_job
from kit.core.model.families import family_of, read_config
from kit.core.results import Checkpoint
from kit.train.recipe_config import TORCHTUNE_YAML

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
SKIP_IN_FULL = ADAPTER_FILES + ("adapter_model.pt", "adapter_model.bin")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def fix_adapter_file(adapter_file: Path, base: Path) -> None:
    """Apply the family's fix to torchtune's PEFT adapter (kit.core.model.families: Family.fix_peft_adapter).

    ``tune_to_peft_adapter_weights`` permutes q_proj/k_proj lora_B rows for every
    model type, but only some families' base weights are stored permuted in HF
    format; for Qwen2 and Qwen3 the saved PEFT adapter computed a different model.
    """
    from safetensors.torch import load_file, save_file

    family = family_of(base)
    if family.hf_weights_permuted:
        return
    tensors = family.fix_peft_adapter(load_file(adapter_file), read_config(base))
    save_file(tensors, adapter_file, metadata={"format": "pt"})


def write_peft_adapter(epoch_dir: Path, out: Path, base: Path, section: dict) -> None:
    """The PEFT adapter from torchtune's own ``adapter_model.pt``, converted by the family (Phi:
    torchtune writes none; kit fuses q/k/v and gate/up exactly, kit.core.model.families.phi3).
    The ``.pt`` was written by this job's recipe a moment ago; ``weights_only`` unpickles tensors only."""
    import torch
    from safetensors.torch import save_file

    source = epoch_dir / "adapter_model.pt"
    if not source.is_file():
        raise KitError(f"torchtune wrote no adapter_model.pt in {str(epoch_dir)!r}; expected its LoRA weights")
    family = family_of(base)
    state = torch.load(source, map_location="cpu", weights_only=True)
    save_file(family.tune_to_peft_adapter(state, read_config(base)), out / ADAPTER_FILES[0], metadata={"format": "pt"})
    (out / ADAPTER_FILES[1]).write_text(json.dumps(family.peft_config(section, base), indent=2))


def recipe_model_section(job: JobDir) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(job.path / TORCHTUNE_YAML).model, resolve=True)


def export_adapter(epoch_dir: Path, job: JobDir | Path, base: Path) -> Path:
    job = as_job(job)
    out = job.output("adapter")
    out.mkdir()
    if not family_of(base).torchtune_writes_peft:
        write_peft_adapter(epoch_dir, out, base, recipe_model_section(job))
        return out
    for name in ADAPTER_FILES:
        src = epoch_dir / name
        if not src.exists():
            raise KitError(f"torchtune wrote no {name} in {str(epoch_dir)!r}; expected a PEFT adapter")
        shutil.copy2(src, out / name)
    config = json.loads((out / "adapter_config.json").read_text())
    # torchtune leaves these out; PEFT needs them to load the adapter on its own
    config.setdefault("base_model_name_or_path", str(base))
    config.setdefault("task_type", "CAUSAL_LM")
    config.setdefault("peft_type", "LORA")
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    fix_adapter_file(out / "adapter_model.safetensors", base)
    return out


def export_full(epoch_dir: Path, job: JobDir | Path) -> Path:
    out = as_job(job).output("hf_model")
    out.mkdir()
    for src in epoch_dir.iterdir():
        if src.is_file() and src.name not in SKIP_IN_FULL:
            shutil.copy2(src, out / src.name)
    if not list(out.glob("*.safetensors")):
        raise KitError(f"torchtune wrote no model *.safetensors in {str(epoch_dir)!r}")
    return out


def export(kind: str, epoch_dir: Path, job_dir: JobDir | Path, base: Path) -> Checkpoint:
    from kit.core.model.qlora import record_trained_on

    job = as_job(job_dir)
    path = export_adapter(epoch_dir, job, base) if kind == "adapter" else export_full(epoch_dir, job)
    if kind == "adapter":  # on a compressed base: what any later merge is checked against
        record_trained_on(path, base)
    return Checkpoint(kind, path, folder_bytes(path))
