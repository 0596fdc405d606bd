"""Check 5: the adapter folder itself.

Its config fits the base (every target module exists, every tensor's shape fits
its layer, lora_A has ``r`` rows), it says what the training run trained
(``r``, ``lora_alpha`` and target modules equal torchtune.yaml's), and PEFT with
the saved adapter reproduces the training run's own model: torchtune's LoRA model
rebuilt from torchtune.yaml with the epoch's adapter (kit/verify/reference.py),
compared by logits on the probe set with the dtype's tolerance.
"""

from __future__ import annotations

from kit.core.errors import KitError
from kit.core.model.families import family_of, peft_ranks, peft_settings
from kit.core.model.snapshot import adapter_target_modules
from kit.lora.resident import check_fits, read_adapter
from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext
from kit.verify.reference import tune_model
from kit.verify.tolerance import compare_logits, limit_note


def check(ctx: VerifyContext) -> dict:
    figures, failed = {}, []
    try:
        config = fits(ctx, figures)
    except KitError as e:
        return {"passed": False, "figures": figures, "tolerance": {}, "detail": str(e)}
    failed += trained_settings(ctx, config, figures)
    failed += training_model(ctx, figures)
    return {
        "passed": not failed,
        "figures": figures,
        "tolerance": {"config": "equal to torchtune.yaml", "logits": ctx.tol.describe()},
        "detail": "; ".join(failed)
        if failed
        else f"{figures['target_modules']} modules fit; PEFT(adapter) vs training model max|diff| "
        f"{figures.get('training_model', {}).get('max_abs_diff', float('nan')):.2e}",
    }


def fits(ctx: VerifyContext, figures: dict) -> dict:

    config, shapes = read_adapter(ctx.adapter)
    base = ctx.resident.model
    hits = adapter_target_modules(base, config)
    wanted = config.get("target_modules") or []
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    absent = [t for t in wanted if isinstance(t, str) and not any(h == t or h.endswith(f".{t}") for h in hits)]
    figures.update(target_modules=len(hits), tensors=len(shapes))
    if not hits or absent:
        raise KitError(f"adapter_config.json targets {absent or wanted}, which the base does not have")
    check_fits(shapes, base, ctx.adapter / "adapter_model.safetensors")
    rows = {s[0] for k, s in shapes.items() if ".lora_A." in k}
    if rows != peft_ranks(config):  # r, and rank_pattern's ranks (Phi's fused projections)
        said = f"r={config['r']}" + (f" and rank_pattern={config['rank_pattern']}" if config.get("rank_pattern") else "")
        raise KitError(f"adapter_config.json says {said} but lora_A tensors have {sorted(rows)} rows")
    return config


def trained_settings(ctx: VerifyContext, config: dict, figures: dict) -> list[str]:
    """r, alpha, targets (and the fused modules' rank/alpha patterns) as saved, against what
    torchtune.yaml trained, in PEFT's module names (the family's own export, ``Family.peft_config``)."""
    if ctx.section is None:
        return []
    trained = peft_settings(family_of(ctx.base).peft_config(ctx.section))
    saved = peft_settings(config)
    figures["config_vs_torchtune_yaml"] = {"saved": saved, "trained": trained}
    return [
        f"adapter_config.json {k}={saved[k]} but torchtune.yaml trained {k}={trained[k]}"
        for k in trained
        if saved[k] != trained[k]
    ]


def training_model(ctx: VerifyContext, figures: dict) -> list[str]:
    if ctx.tune_adapter is None or ctx.section is None:
        figures["training_model"] = "not compared: the job kept no torchtune adapter"
        return []
    import torch

    model = tune_model(ctx.section, ctx.base, ctx.tune_adapter, ctx.torch_dtype).to(ctx.device)
    with torch.inference_mode():
        ref = [model(torch.tensor([ids], device=ctx.device))[0].float().cpu() for ids in ctx.probes()]
    del model
    f = compare_logits(ref, ctx.logits("direct"), ctx.tol)
    figures["training_model"] = f
    if f["passed"]:
        return []
    limit = limit_note(f, ctx.tol)
    return [
        f"PEFT(adapter) vs torchtune's training model: max|logit diff| {f['max_abs_diff']:.3g}{limit}, "
        f"top-1 agreement {f['top1_agreement']:.3f}"
    ]


CHECK = VerifyCheck("adapter_folder", check, "the adapter fits the base, matches torchtune.yaml, reproduces the training model")
