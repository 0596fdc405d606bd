"""kit's fused unmerged LoRA (kit.lora.fused) and decode loop (kit.lora.decode) against PEFT and HF
``generate``, on tiny random models built here from transformers' own config classes, one per family
(Qwen2, Llama tied and untied, Gemma with its scaled embeddings, Mistral and Gemma2 with sliding
windows shorter than the prompts, Phi-3 with its fused qkv_proj/gate_up_proj, Qwen3 with q/k norms),
with adapters that use rank_pattern/alpha_pattern, rsLoRA and an lm_head target.

PEFT is the reference: the fused path must give PEFT's logits (fp32: within kit verify's fp32 tolerance,
kit/verify/tolerance.py; bf16: no top-1 flip beyond a near-tie and at most twice PEFT's own bf16 error,
plus one bf16 step of the row's largest logit), for one adapter, for a batch mixing adapters and the
base row by row, and merged in place. Greedy tokens of kit's decode loop equal HF ``generate``'s, also
when rows join and leave a running batch. The output layers are scaled so that logits are peaked:
random-init models have near-flat logits, where two numerically close paths pick different tokens.
"""

from __future__ import annotations

import json

import pytest
import torch
from lora_models import FAMILIES, build_adapter, build_base

from kit.lora.resident import ResidentBase
from kit.verify.tolerance import Tolerance, compare_logits, rounding_yardstick

FP32 = Tolerance("fp32", 512, 1e-5, 4)  # conf/verify/default.yaml
BF16 = Tolerance("bf16", 512, 1e-5, 4)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Per family: the base folder and three adapters (patterns, rsLoRA + lm_head, small)."""
    where = tmp_path_factory.mktemp("families")
    made = {}
    for f in FAMILIES:
        base = build_base(f, where / f / "base")
        kinds = ["patterns", "rslora_head", "small"]
        made[f] = (base, [build_adapter(base, f, where / f / k, i + 1, k) for i, k in enumerate(kinds)])
    return made


PROMPTS = [[5, 9, 17, 33, 65, 129, 7, 11, 200, 300, 13, 19], [40, 41, 42], [100, 101, 102, 103, 104, 105, 106]]


def padded(prompts=PROMPTS):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def forward_logits(resident, name, ids, mask):
    with resident.lock, torch.inference_mode():
        resident.activate(name)
        return resident.forward_model(name)(input_ids=ids, attention_mask=mask).logits.float()


def real_rows(logits, mask):
    """Logits at the real (not padded) positions, one tensor per row."""
    return [logits[b][mask[b].bool()] for b in range(logits.shape[0])]


def assert_close(ref, got, tol=FP32, rounding=None):
    figures = compare_logits(ref, got, tol, rounding)
    assert figures["passed"], figures


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_logits_equal_peft_and_decode_equals_generate(families, family):
    base, adapters = families[family]
    fused = ResidentBase(base, "cpu", "fp32", max_adapters=4)
    peft = ResidentBase(base, "cpu", "fp32", max_adapters=4, fused=False)
    ids, mask = padded()
    names = []
    for adapter in adapters:
        names.append(fused.attach(adapter))
        assert peft.attach(adapter) == names[-1]
        assert names[-1] in fused.fused.slot_of, "plain LoRA adapters compute through the fused path"
    for name in [*names, None]:
        ref, got = forward_logits(peft, name, ids, mask), forward_logits(fused, name, ids, mask)
        assert_close(real_rows(ref, mask), real_rows(got, mask))
        if name is not None:  # the adapter matters: far more than rounding
            assert (ref - forward_logits(peft, None, ids, mask)).abs().max() > 0.1
    # greedy tokens: kit's decode loop on the fused path == HF generate on PEFT's
    for name in (names[1], None):
        settings = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=2, return_dict_in_generate=True)
        expected = peft.generate(name, input_ids=ids, attention_mask=mask, **settings).sequences
        with torch.inference_mode():
            got = fused.generate(name, input_ids=ids, attention_mask=mask, **settings).sequences
        assert fused.decoder() is not None and torch.equal(got, expected), (got, expected)


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "phi3"])
def test_mixed_rows_equal_each_adapter_alone(families, family):
    """One forward where each row has its own adapter (or the base): PEFT's logits per row."""
    base, adapters = families[family]
    fused = ResidentBase(base, "cpu", "fp32", max_adapters=4)
    peft = ResidentBase(base, "cpu", "fp32", max_adapters=4, fused=False)
    names = [fused.attach(a) for a in adapters]
    [peft.attach(a) for a in adapters]
    rows = [names[0], None, names[2], names[1], names[0]]
    prompts = [PROMPTS[i % 3] for i in range(len(rows))]
    ids, mask = padded(prompts)
    ref = torch.cat([forward_logits(peft, n, ids[i : i + 1], mask[i : i + 1]) for i, n in enumerate(rows)])
    with fused.lock, torch.inference_mode():
        fused.activate(names[0])
        f = fused.fused
        f.use_rows([f.slot_of[n] if n else None for n in rows])
        assert f.mode == "mixed"
        got = fused.model(input_ids=ids, attention_mask=mask).logits.float()
    assert_close(real_rows(ref, mask), real_rows(got, mask))


def test_rows_join_and_leave_a_running_batch(families):
    """Continuous batching at the decoder: a row admitted mid-way (another adapter, longer prompt)
    and a row leaving early change no row's greedy tokens against each row run alone."""
    base, adapters = families["mistral"]  # sliding window 8 < the rows' lengths
    resident = ResidentBase(base, "cpu", "fp32", max_adapters=4)
    names = [resident.attach(a) for a in adapters]
    slots = [resident.fused.slot_of[n] for n in names]
    plan = [(PROMPTS[0], slots[0], 0, 10), (PROMPTS[1], None, 0, 3), (PROMPTS[2], slots[1], 4, 10)]  # prompt, slot, join, tokens

    def greedy(rows):
        decoder, out, step = resident.decoder(), {i: [] for i in range(len(rows))}, 0
        decoder.clear()
        with resident.lock:
            resident.activate(names[0])
            pending = dict(enumerate(rows))
            logits = None
            while pending or decoder.rows:
                if logits is not None:
                    for tag, t in zip(decoder.tags(), logits.argmax(-1).tolist()):
                        out[tag].append(t)
                    for tag in [t for t in decoder.tags() if len(out[t]) == rows[t][3]]:
                        decoder.drop(tag)
                joining = [t for t, r in pending.items() if r[2] <= step]
                fed = [out[t][-1] for t in decoder.tags()]
                logits = decoder.step(fed) if decoder.rows else None
                if joining:
                    new = decoder.admit([rows[t][0] for t in joining], [rows[t][1] for t in joining], joining)
                    logits = new if logits is None else torch.cat([logits, new])
                    for t in joining:
                        pending.pop(t)
                step += 1
                if logits is None:
                    break
        return out

    together = greedy(plan)
    for i, row in enumerate(plan):
        assert greedy([(row[0], row[1], 0, row[3])])[0] == together[i], i


def test_bf16_fused_within_its_bound(families):
    """bf16: fused and PEFT both against the fp32 PEFT reference; the fused error is bounded by PEFT's own."""
    base, adapters = families["qwen2"]
    ref_model = ResidentBase(base, "cpu", "fp32", fused=False)
    peft16 = ResidentBase(base, "cpu", "bf16", fused=False)
    fused16 = ResidentBase(base, "cpu", "bf16")
    ids, mask = padded()
    for adapter in adapters[:2]:
        name = ref_model.attach(adapter)
        peft16.attach(adapter), fused16.attach(adapter)
        ref = real_rows(forward_logits(ref_model, name, ids, mask), mask)
        p16 = real_rows(forward_logits(peft16, name, ids, mask), mask)
        f16 = real_rows(forward_logits(fused16, name, ids, mask), mask)
        # the yardstick: PEFT's own bf16 path against the same fp32 reference (kit verify's rule)
        assert_close(ref, f16, BF16, rounding_yardstick(ref, p16, BF16))
        peft_err = max(float((a - b).abs().max()) for a, b in zip(ref, p16))
        fused_err = max(float((a - b).abs().max()) for a, b in zip(ref, f16))
        step = torch.finfo(torch.bfloat16).eps * max(float(r.abs().max()) for r in ref)
        assert fused_err <= 2 * peft_err + step, (fused_err, peft_err, step)


def test_in_place_merge_equals_peft_merge_and_restores_bit_exactly(families):
    base, adapters = families["phi3"]
    fused = ResidentBase(base, "cpu", "fp32")
    peft = ResidentBase(base, "cpu", "fp32", fused=False)
    before = fused.fingerprint()
    ids, mask = padded()
    for adapter in adapters:
        name = fused.attach(adapter)
        peft.attach(adapter)
        with fused.lock, peft.lock, torch.inference_mode():
            fused.activate(name, merged=True)
            peft.activate(name, merged=True)
            assert fused.merged_by == "fused" and peft.merged_by == "peft"
            got = fused.forward_model(name)(input_ids=ids, attention_mask=mask).logits
            ref = peft.forward_model(name)(input_ids=ids, attention_mask=mask).logits
            for n, p in fused.model.named_parameters():
                if "lora_" not in n:
                    q = dict(peft.model.named_parameters())[n]
                    assert torch.allclose(p, q, atol=1e-5), n
        assert_close(real_rows(ref, mask), real_rows(got, mask))
        with fused.lock:
            fused.restore()
        assert fused.fingerprint() == before


def test_unsupported_adapters_stay_on_peft(families, tmp_path):
    """A DoRA adapter is PEFT's alone (no fused slot) and still computes PEFT's own logits."""
    from peft import LoraConfig, get_peft_model

    from kit.core.model.loader import load_model

    base, _ = families["qwen2"]
    model = get_peft_model(load_model(base), LoraConfig(r=4, use_dora=True, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    model.save_pretrained(tmp_path / "dora")
    fused = ResidentBase(base, "cpu", "fp32")
    name = fused.attach(tmp_path / "dora")
    assert name not in fused.fused.slot_of
    peft = ResidentBase(base, "cpu", "fp32", fused=False)
    peft.attach(tmp_path / "dora")
    ids, mask = padded()
    assert torch.equal(forward_logits(fused, name, ids, mask), forward_logits(peft, name, ids, mask))
    assert json.loads((tmp_path / "dora" / "adapter_config.json").read_text())["use_dora"]


def mixed_greedy(resident, slots, steps=8):
    """Greedy tokens of rows with their own LoRA slots, decoded together by the low-level loop."""
    decoder = resident.decoder()
    decoder.clear()
    with resident.lock:
        resident.activate(None)
        logits = decoder.admit([PROMPTS[i % 3] for i in range(len(slots))], slots, list(range(len(slots))))
        out = [[] for _ in slots]
        for _ in range(steps):
            picked = logits.argmax(-1).tolist()
            for tag, t in zip(decoder.tags(), picked):
                out[tag].append(t)
            logits = decoder.step(picked)
    decoder.clear()
    return out


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_recorded_decode_step_matches_eager(families, device, tmp_path):
    """The decode step recorded once (CUDA: a CUDA graph; CPU: the same fixed buffers, re-run) gives
    the eager loop's greedy tokens, one adapter or mixed per row; another adapter of the same ranks
    replays the recorded steps (its weights are copied into the fixed buffers), nothing is re-recorded."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    base, adapters = families["qwen2"]
    recorded = ResidentBase(base, device, "fp32", max_adapters=4, cuda_graphs=True)
    eager = ResidentBase(base, device, "fp32", max_adapters=4, cuda_graphs=False)
    twin = build_adapter(base, "qwen2", tmp_path / "twin", 9, "patterns")  # adapter 0's ranks, other weights
    names = [recorded.attach(a) for a in [*adapters, twin]]
    [eager.attach(a) for a in [*adapters, twin]]
    ids, mask = (t.to(device) for t in padded())
    settings = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=2)
    for name in [names[0], None, names[2]]:
        want = eager.generate(name, input_ids=ids, attention_mask=mask, **settings)
        got = recorded.generate(name, input_ids=ids, attention_mask=mask, **settings)
        assert torch.equal(got, want), name
    decoder = recorded.decoder()
    assert decoder.capture and decoder.captures > 0
    before = decoder.captures
    assert recorded.fused.ranks(names[0]) == recorded.fused.ranks(names[3])
    got = recorded.generate(names[3], input_ids=ids, attention_mask=mask, **settings)
    assert decoder.captures == before, "an adapter of the same ranks replays the recorded steps"
    assert torch.equal(got, eager.generate(names[3], input_ids=ids, attention_mask=mask, **settings))
    assert not torch.equal(got, eager.generate(names[0], input_ids=ids, attention_mask=mask, **settings))
    slots = [recorded.fused.slot_of[n] for n in names[:3]]
    mix = [slots[0], None, slots[1], slots[2], slots[0]]
    eager_slots = [eager.fused.slot_of[n] for n in names[:3]]
    assert mixed_greedy(recorded, mix) == mixed_greedy(
        eager, [eager_slots[slots.index(s)] if s is not None else None for s in mix]
    )
