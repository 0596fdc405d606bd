"""Check 5: the adapter folder is what the training run trained, whatever the eval dtype.

- It fits the base: every target module exists, every tensor's shape fits its layer,
  lora_A has ``r`` rows.
- Its config says what torchtune.yaml trained: every LoRA setting that changes the model
  (kit.eval.checks.lora_config_problems, the same comparison ``kit eval`` runs first).
- Its tensors are the training run's, bit for bit: the epoch's torchtune adapter
  (``verify/torchtune_adapter.safetensors``) through kit's export conversion
  (``Family.tune_to_peft_adapter``) equals ``adapter_model.safetensors`` exactly: names,
  dtypes, shapes and every bit. Any change to a weight fails here, in every dtype.
- PEFT with the saved adapter reproduces the training run's own model: torchtune's LoRA
  model rebuilt from torchtune.yaml with the epoch's adapter (kit/verify/reference.py),
  against the fp32 reference by logits on the probe set with the fp32 rule. Both sides run
  in fp32 whatever ``verify.dtype`` is, so the dtype's rounding cannot hide a wrong model.
"""

from __future__ import annotations

from kit.core.errors import KitError
from kit.core.model.families import family_of, peft_ranks, read_config
from kit.core.model.snapshot import adapter_target_modules
from kit.eval.checks import lora_config_problems
from kit.lora.resident import check_fits, read_adapter
from kit.verify.check import VerifyCheck
from kit.verify.context import REFERENCE, VerifyContext
from kit.verify.reference import tune_model
from kit.verify.tolerance import compare_logits, limit_note


def check(ctx: VerifyContext) -> dict:
    figures, failed = {}, []
    try:
        config = fits(ctx, figures)
    except KitError as e:
        return {"passed": False, "figures": figures, "tolerance": {}, "detail": str(e)}
    failed += trained_settings(ctx, config, figures)
    failed += exported_tensors(ctx, figures)
    failed += training_model(ctx, figures)
    model = figures.get("training_model")
    return {
        "passed": not failed,
        "figures": figures,
        "tolerance": {
            "config": "every LoRA setting equal to torchtune.yaml's",
            "tensors": "bit-identical to the converted training weights",
            "training_model": ctx.fp32_tol.describe(),
        },
        "detail": "; ".join(failed)
        if failed
        else f"{figures['target_modules']} modules fit; tensors bit-identical to the training run's; "
        f"fp32 PEFT(adapter) vs training model max|diff| "
        f"{model.get('max_abs_diff', float('nan')) if isinstance(model, dict) else float('nan'):.2e}",
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
    """Every LoRA setting as saved, against what torchtune.yaml trained (in the family's PEFT
    names and patterns, ``Family.peft_config``): the comparison ``kit eval`` runs first."""
    if ctx.section is None:
        return []
    saved, trained, problems = lora_config_problems(config, ctx.section, family_of(ctx.base))
    figures["config_vs_torchtune_yaml"] = {"saved": saved, "trained": trained}
    return [f"adapter_config.json {p}" for p in problems]


def bits(t):
    """The tensor's bytes (so that -0.0 differs from 0.0 and a NaN equals itself)."""
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8)


def tensor_differences(expected: dict, saved: dict) -> list[str]:
    """Names (with what differs) where ``saved`` is not bit-identical to ``expected``."""
    import torch

    out = [f"{k}: missing" for k in sorted(set(expected) - set(saved))]
    out += [f"{k}: not in the training run" for k in sorted(set(saved) - set(expected))]
    for k in sorted(set(expected) & set(saved)):
        a, b = expected[k], saved[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{k}: {b.dtype} {list(b.shape)}, trained {a.dtype} {list(a.shape)}")
        elif not torch.equal(bits(a), bits(b)):
            rel = ((b.float() - a.float()).abs().max() / a.float().abs().max().clamp_min(1e-30)).item()
            out.append(f"{k}: differs (max|diff| {rel:.3g} of max|w|)")
    return out


def exported_tensors(ctx: VerifyContext, figures: dict) -> list[str]:
    """The exported tensors against the training run's, converted as kit's export converts them."""
    if ctx.tune_adapter is None or ctx.full is not None:
        # a full-model job's PEFT adapter is built from the torchtune adapter here: nothing to
        # compare; its full model is checked through the logits
        why = "the job kept no torchtune adapter" if ctx.tune_adapter is None else "built from the torchtune adapter"
        figures["exported_vs_training_weights"] = f"not compared: {why}"
        return []
    from safetensors.torch import load_file

    expected = family_of(ctx.base).tune_to_peft_adapter(load_file(ctx.tune_adapter), read_config(ctx.base))
    differ = tensor_differences(expected, load_file(ctx.adapter / "adapter_model.safetensors"))
    figures["exported_vs_training_weights"] = {"tensors": len(expected), "differing": len(differ), "first": differ[:3]}
    if not differ:
        return []
    return [
        f"adapter_model.safetensors differs from the training run's weights (torchtune adapter -> kit's "
        f"conversion) in {len(differ)} of {len(expected)} tensors, e.g. {differ[0]}"
    ]


def training_model(ctx: VerifyContext, figures: dict) -> list[str]:
    if ctx.tune_adapter is None or ctx.section is None:
        figures["training_model"] = "not compared: the job kept no torchtune adapter"
        return []
    import torch

    model = tune_model(ctx.section, ctx.base, ctx.tune_adapter, torch.float32).to(ctx.device)
    with torch.inference_mode():
        ref = [model(torch.tensor([ids], device=ctx.device))[0].float().cpu() for ids in ctx.probes()]
    del model
    f = compare_logits(ref, ctx.logits(REFERENCE), ctx.fp32_tol)
    figures["training_model"] = f
    if f["passed"]:
        return []
    return [
        f"fp32 PEFT(adapter) vs torchtune's training model: max|logit diff| {f['max_abs_diff']:.3g}"
        f"{limit_note(f, ctx.fp32_tol)}, top-1 agreement {f['top1_agreement']:.3f}"
    ]


CHECK = VerifyCheck("adapter_folder", check, "the adapter fits the base, matches torchtune.yaml, reproduces the training model")
