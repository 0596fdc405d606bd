"""Checks every eval of an adapter runs first: the adapter is what the job
trained, PEFT loads all of it, and it changes the model's output.

``check_adapter`` (before every strategy, from kit.eval.evaluate) is cheap and loads no weights: the
saved config against the job's ``torchtune.yaml`` (r, alpha, target modules and the fused modules'
patterns as the family exports them, and every other LoRA setting that changes the model at PEFT's
plain value: no rsLoRA, no DoRA, every layer; ``PLAIN_LORA``), then PEFT's own loading of the saved
tensors into the adapter built on an empty (meta) copy of the base: zero missing and zero unexpected
keys, and not every ``lora_B`` zero. ``changed_by`` compares logits on a few probes with and without
the adapter, on the model each strategy already holds (the merge path's fp32 PEFT model, the
resident base of direct / merge_in_memory): an adapter that changes nothing would score as the base.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.families import Family, family_of, peft_settings
from kit.lora.resident import read_adapter


def check_adapter(adapter: Path, job_dir: Path | None, base: Path) -> dict:
    """Config vs torchtune.yaml, keys as PEFT loads them, non-zero update; one-line KitError otherwise."""
    config, shapes = read_adapter(adapter)
    problems = vs_torchtune(config, job_dir, base)
    missing, unexpected = peft_load_keys(adapter, base, config)
    if missing:
        problems.append(f"{len(missing)} LoRA weight(s) missing from adapter_model.safetensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) PEFT does not expect (e.g. {unexpected[0]})")
    if problems:
        raise KitError(
            f"adapter {str(adapter)!r} does not match the job: {'; '.join(problems)}; "
            "expected the adapter this job trained (re-export it, or run kit verify)"
        )
    if all_lora_b_zero(adapter / "adapter_model.safetensors"):
        raise KitError(
            f"adapter {str(adapter)!r} has every lora_B weight zero: it changes nothing and would "
            "score as the base; expected a trained adapter"
        )
    return {"tensors": len(shapes), "r": config.get("r")}


# What a torchtune-trained LoRA leaves at PEFT's plain setting: every LoraConfig field that
# changes the forward pass, other than those the family's export decides (r, alpha, targets and
# the fused modules' rank/alpha patterns, ``Family.peft_config``), with the value torchtune's LoRA
# computes. A saved config that leaves a field out gets PEFT's default.
PLAIN_LORA = {
    "peft_type": "LORA",
    "use_rslora": False,
    "use_dora": False,
    "use_qalora": False,
    "lora_bias": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "layers_to_transform": None,
    "layers_pattern": None,
    "exclude_modules": None,
    "modules_to_save": None,
    "trainable_token_indices": None,
    "layer_replication": None,
    "target_parameters": None,
    "alora_invocation_tokens": None,
    "megatron_config": None,
    "arrow_config": None,
}


def trained_lora(section: dict, family: Family) -> dict:
    """The PEFT LoRA settings torchtune.yaml's model section trained, in the family's PEFT names."""
    return {**peft_settings(family.peft_config(section)), **PLAIN_LORA}


def saved_lora(config: dict) -> dict:
    """adapter_config.json's value of each compared field, PEFT's default where it is left out."""
    import dataclasses

    from peft import LoraConfig

    defaults = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(LoraConfig)
    }
    out = peft_settings(config)
    for key in PLAIN_LORA:
        value = config.get(key, defaults.get(key))
        out[key] = None if value in ({}, []) else value  # PEFT treats an empty pattern or list as none
    out["use_rslora"] = bool(out["use_rslora"])
    return out


def lora_config_problems(config: dict, section: dict, family: Family) -> tuple[dict, dict, list[str]]:
    """(saved, trained, one line per field that differs): adapter_config.json against what
    torchtune.yaml trained, over every LoRA setting that changes the model. One function for
    ``kit eval``'s check and ``kit verify``'s adapter_folder check."""
    trained, saved = trained_lora(section, family), saved_lora(config)
    problems = [f"{k}={saved[k]} but torchtune.yaml trained {k}={trained[k]}" for k in trained if saved[k] != trained[k]]
    return saved, trained, problems


def vs_torchtune(config: dict, job_dir: Path | None, base: Path) -> list[str]:
    """What the saved adapter_config.json says against what torchtune.yaml trained."""
    if job_dir is None or not (job_dir / "torchtune.yaml").is_file():
        return []
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(OmegaConf.load(job_dir / "torchtune.yaml").model, resolve=True)
    return lora_config_problems(config, section, family_of(base))[2]


def peft_load_keys(adapter: Path, base: Path, config: dict) -> tuple[list[str], list[str]]:
    """(missing, unexpected) LoRA keys when PEFT loads the saved tensors into the adapter its config
    describes, built on an empty copy of the base (no base weights read)."""
    import warnings

    from accelerate import init_empty_weights
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    known = set(LoraConfig.__dataclass_fields__)
    lora_config = LoraConfig(**{k: v for k, v in config.items() if k in known})
    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns about the very keys we return
        model = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base)), lora_config)
        weights = adapter / "adapter_model.safetensors"
        try:
            result = set_peft_model_state_dict(model, load_file(weights))
        except RuntimeError as e:  # torch's "size mismatch for ...": an adapter trained on another base
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise KitError(
                f"{str(weights)!r} does not fit this base ({base}): {first}; expected an adapter trained on this base"
            ) from None
    missing = sorted(k for k in result.missing_keys if "lora_" in k)
    return missing, sorted(result.unexpected_keys)


def all_lora_b_zero(weights: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        keys = [k for k in f.keys() if ".lora_B." in k]
        return bool(keys) and all(not f.get_tensor(k).any() for k in keys)
