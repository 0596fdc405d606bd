"""Checks every eval of an adapter runs first: the adapter is what the job
trained, PEFT loads all of it, and it changes the model's output.

``check_adapter`` (before every strategy, from kit.eval.evaluate) is cheap and loads no
weights: the saved config against the job's ``torchtune.yaml`` (r, alpha, target modules, no
rsLoRA, every layer), then PEFT's own loading of the saved tensors into the adapter built on an
empty (meta) copy of the base: zero missing and zero unexpected keys, and not every ``lora_B``
zero. ``changed_by`` compares logits on a few probes with and without the adapter, on the
model each strategy already holds (the merge path's fp32 PEFT model, the resident base of
direct / merge_in_memory): an adapter that changes nothing would score as the base.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError
from kit.core.model.families import family_of, peft_settings
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


def vs_torchtune(config: dict, job_dir: Path | None, base: Path) -> list[str]:
    """What the saved adapter_config.json says against what torchtune.yaml trained (in the family's
    PEFT names and patterns, ``Family.peft_config``)."""
    if job_dir is None or not (job_dir / "torchtune.yaml").is_file():
        return []
    from omegaconf import OmegaConf

    s = OmegaConf.to_container(OmegaConf.load(job_dir / "torchtune.yaml").model, resolve=True)
    trained = {**peft_settings(family_of(base).peft_config(s)), "use_rslora": False, "layers_to_transform": None}
    saved = {
        **peft_settings(config),
        "use_rslora": bool(config.get("use_rslora")),
        "layers_to_transform": config.get("layers_to_transform"),
    }
    return [f"{k}={saved[k]} but torchtune.yaml trained {k}={trained[k]}" for k in trained if saved[k] != trained[k]]


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
