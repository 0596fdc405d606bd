"""Check 2: generations token by token on every path.

Greedy at batch size 1 (no padding) and as one left-padded batch with attention
masks, against the ``merge`` path (the model ``eval=merge`` runs, in the verify dtype)
at batch size 1; and sampled generation
with a fixed seed and non-default temperature/top_p. In fp32 every sequence must
be identical. In bf16/fp16 a greedy divergence counts only when the reference's
top-1 margin at the first differing step is above the near-tie bound
(kit/verify/tolerance.py); sampled sequences there are reported, and only the
reference's own seeded repeat is required to be identical (sampling turns a
rounding-size logit difference into a different token whenever the random draw
lands near a boundary, which no margin can judge).
"""

from __future__ import annotations

from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext
from kit.verify.tolerance import top2_margin

REFERENCE = "merge"  # generation runs in the eval dtype: the fp32 reference does not generate


def check(ctx: VerifyContext) -> dict:
    prompts = ctx.prompts()
    runs = {name: run_path(ctx, name, prompts) for name in ctx.path_names()}
    ref = runs[REFERENCE]
    figures, failed = {}, []
    for name, run in runs.items():
        for layout in ("greedy_b1", "greedy_batch"):
            if (name, layout) == (REFERENCE, "greedy_b1"):
                continue
            f = compare_greedy(ctx, ref["greedy_b1"], run[layout])
            figures[f"{name}/{layout}"] = f
            if f["mismatches"]:
                failed.append(
                    f"{name}/{layout}: {f['mismatches']} of {len(prompts)} greedy sequences differ "
                    f"from {REFERENCE}/greedy_b1 (first at step {f['first_step']})"
                )
        same = sum(a == b for a, b in zip(ref["sampled"], run["sampled"]))
        figures[f"{name}/sampled"] = {"identical": same, "sequences": len(prompts)}
        if same < len(prompts) and ctx.tol.strict:
            failed.append(f"{name}/sampled: {len(prompts) - same} of {len(prompts)} seeded samples differ from {REFERENCE}")
    again = sample(ctx, REFERENCE, prompts)
    figures["seeded_repeat_identical"] = again == ref["sampled"]
    if again != ref["sampled"]:
        failed.append(f"{REFERENCE}: the same seed gave different samples on a second run")
    s = ctx.cfg.verify.sample
    return {
        "passed": not failed,
        "figures": figures,
        "tolerance": {
            **ctx.tol.describe(),
            "sample": {"temperature": s.temperature, "top_p": s.top_p, "seed": s.seed},
            "max_new_tokens": int(ctx.cfg.verify.max_new_tokens),
            "batch": len(prompts),
        },
        "detail": "; ".join(failed)
        if failed
        else f"greedy (batch 1 and {len(prompts)}) and seeded sampling agree on {len(runs)} paths",
    }


def run_path(ctx: VerifyContext, name: str, prompts: list[list[int]]) -> dict:
    return {
        "greedy_b1": [greedy(ctx, name, [p])[0] for p in prompts],
        "greedy_batch": greedy(ctx, name, prompts),
        "sampled": sample(ctx, name, prompts),
    }


def padded(ctx: VerifyContext, prompts: list[list[int]]):
    """Left-padded ids and attention mask, as Inspect's hf provider batches prompts."""
    import torch

    tok = ctx.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, prompts))
    ids = [[pad] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(ids, device=ctx.device), torch.tensor(mask, device=ctx.device), pad


def generate(ctx: VerifyContext, name: str, prompts: list[list[int]], **kwargs):
    import torch

    ids, mask, pad = padded(ctx, prompts)
    with ctx.path(name) as model, torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=int(ctx.cfg.verify.max_new_tokens),
            pad_token_id=pad,
            return_dict_in_generate=True,
            **kwargs,
        )
    return out, ids.shape[1]


def trim(tokens: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stop:
            return tokens[: i + 1]
    return tokens


def stop_ids(ctx: VerifyContext) -> set[int]:
    eos = ctx.resident.model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return {t for t in [*eos, ctx.tokenizer.eos_token_id] if t is not None}


def greedy(ctx: VerifyContext, name: str, prompts: list[list[int]]) -> list[dict]:
    """Per prompt: generated tokens (to the first stop token) and each step's raw logits."""
    out, width = generate(ctx, name, prompts, do_sample=False, output_logits=True)
    stop = stop_ids(ctx)
    results = []
    for row in range(len(prompts)):
        tokens = trim(out.sequences[row, width:].tolist(), stop)
        steps = [step[row].float().cpu() for step in out.logits[: len(tokens)]]
        results.append({"tokens": tokens, "logits": steps})
    return results


def sample(ctx: VerifyContext, name: str, prompts: list[list[int]]) -> list[list[int]]:
    import torch

    s = ctx.cfg.verify.sample
    stop, tokens = stop_ids(ctx), []
    for p in prompts:
        torch.manual_seed(int(s.seed))
        out, width = generate(ctx, name, [p], do_sample=True, temperature=float(s.temperature), top_p=float(s.top_p))
        tokens.append(trim(out.sequences[0, width:].tolist(), stop))
    return tokens


def compare_greedy(ctx: VerifyContext, refs: list[dict], gots: list[dict]) -> dict:

    mismatches = near_ties = 0
    first_step = None
    for ref, got in zip(refs, gots):
        a, b = ref["tokens"], got["tokens"]
        if a == b:
            continue
        step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if step < len(ref["logits"]):
            row = ref["logits"][step]
            if top2_margin(row).item() <= ctx.tol.margin_bound(row).item() and not ctx.tol.strict:
                near_ties += 1
                continue
        mismatches += 1
        first_step = step if first_step is None else min(first_step, step)
    return {"mismatches": mismatches, "near_tie_divergences": near_ties, "first_step": first_step, "sequences": len(refs)}


CHECK = VerifyCheck("generation", check, "greedy tokens at batch 1 and in one padded batch; seeded sampling")
