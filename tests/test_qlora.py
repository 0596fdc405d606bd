"""Modifiers on an nf4 compressed base: torchtune's QLoRA over the stored NF4 tensors, the merge guard
(into dequant(Wq) only), and ``kit serve`` over that base through the real ``openai`` client."""

from __future__ import annotations

import json

import pytest
import torch

from kit.core.errors import KitError

pytestmark = pytest.mark.slow
PROMPT = "Is 4821 even or odd?"


def run(overrides, job, name):
    from omegaconf import OmegaConf

    from kit.core.config import compose
    from kit.core.identity import RunIdentity
    from kit.job.pipeline import run_job

    cfg = compose("train", overrides)
    OmegaConf.resolve(cfg)
    run_job(cfg, job, RunIdentity("qlora", name), overrides)
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "done", summary.get("error")
    return summary


@pytest.fixture(scope="module")
def nf4_modifier(tiny_base, tmp_path_factory):
    """The tiny base compressed to nf4 (scale groups of 16: its 64-wide layers), and one parity modifier
    trained on it with QLoRA, scored unmerged on 10 rows: (compress job, modifier job)."""
    root = tmp_path_factory.mktemp("qlora")
    compress = ["phase=compress", "phase.compress.nf4_scaler_block_size=16", "phase.compress.dequantized=true"]
    run([f"model.path={tiny_base}", "logger=none", *compress, "phase.compress.heldout_rows=0"], root / "nf4", "nf4")
    modifier = [
        f"model.path={root / 'nf4' / 'dequantized'}",
        "logger=none",
        "+experiment=modifiers",
        "~phase.modifiers.last_digit",
        "~phase.modifiers.reverse",
        "phase.modifiers.parity.tasks=[kit/parity]",
        "trainer.epochs=1",
        "trainer.lr=5e-3",
        "trainer.clip_grad_norm=null",
        "tasks.limit=10",
    ]
    run(modifier, root / "mod", "modifier")
    return root / "nf4", root / "mod"


def adapter_of(job):
    return job / "modifiers" / "parity" / "adapter"


def test_qlora_trains_over_the_stored_nf4_tensors(nf4_modifier):
    """torchtune's training model (torchtune.yaml's builder, the base loaded as its recipe loads it)
    computes with NF4 weights whose parts are the compressed base's stored ones, byte for byte, and
    which dequantize to the base the modifier is scored and served on."""
    from safetensors.torch import load_file

    from kit.core.model import compress, qlora
    from kit.core.model.compress import SEP, dequantized_state, read_state
    from kit.core.model.families import _call, family_of, read_config
    from kit.core.model.qlora import BUILDER, check_trains_on, nf4_weights
    from kit.verify.reference import model_section

    assert (qlora.MANIFEST, qlora.NF4_SCALER_BLOCK) == (compress.MANIFEST, compress.NF4_SCALER_BLOCK)  # kept apart: torch
    compressed, job = nf4_modifier
    args = model_section(job / "modifiers" / "parity")
    assert args["_component_"] == BUILDER and args["nf4_scaler_block_size"] == 16
    model = _call(args.pop("_component_"), **args)
    base = compressed / "dequantized"
    loaded = family_of(base).hf_to_tune(read_state(base), read_config(base))
    model.load_state_dict(loaded, strict=False)
    assert check_trains_on(model, loaded) == 2 * 7 + 1  # every LoRA layer: q, k, v, o, gate, up, down x 2, output
    weights = nf4_weights(model)
    served = family_of(base).hf_to_tune(dequantized_state(compressed / "compressed"), read_config(base))
    stored = load_file(compressed / "compressed" / "compressed.safetensors")
    codes = {k for k in stored if k.endswith(SEP + "quantized_data")}
    for name, weight in weights.items():
        assert weight.dtype == torch.bfloat16 and torch.equal(weight.get_original_weight().float(), served[name]), name
        assert any(torch.equal(weight.quantized_data, stored[k]) for k in codes), name


def test_the_modifier_is_scored_unmerged_and_records_its_base(nf4_modifier):
    compressed, job = nf4_modifier
    summary = json.loads((job / "summary.json").read_text())
    assert set(summary["scores"]) == {"parity/parity"}
    registry = json.loads((job / "modifiers.json").read_text())
    assert registry["base"]["path"] == str(compressed / "dequantized")
    trained_on = json.loads((adapter_of(job) / "kit_trained_on.json").read_text())
    assert trained_on["precision"] == "nf4" and trained_on["path"] == str(compressed / "dequantized")


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def test_merging_into_the_full_precision_source_is_refused(nf4_modifier, tiny_base, tmp_path):
    from kit.lora.merge import merge_to_folder

    compressed, job = nf4_modifier
    with pytest.raises(KitError) as e:
        merge_to_folder(tiny_base, adapter_of(job), tmp_path / "merged")
    message = str(e.value)
    assert "\n" not in message and str(tiny_base) in message and str(compressed / "dequantized") in message
    assert "nf4" in message and "full-precision source" in message
    assert not (tmp_path / "merged").exists()


def test_merging_into_dequant_wq_agrees_with_the_unmerged_modifier(nf4_modifier, tiny_base):
    """Merged into dequant(Wq) the modifier computes what it computes unmerged (fp32 logits); the merge
    the guard refuses (into the source W) would differ by the quantization error, far more."""
    from peft import PeftModel

    from kit.core.model.loader import load_model, load_tokenizer
    from kit.lora.merge import merged_model

    compressed, job = nf4_modifier
    base, adapter = compressed / "dequantized", adapter_of(job)
    ids = load_tokenizer(base)(PROMPT, return_tensors="pt").input_ids
    unmerged = logits(PeftModel.from_pretrained(load_model(base, dtype="float32"), adapter), ids)
    merged = logits(merged_model(base, adapter)[0], ids)
    agree = (merged - unmerged).abs().max().item()
    assert agree <= 1e-5 * max(1.0, unmerged.abs().max().item()), agree
    # what the guard prevents: PEFT itself merging it into the full-precision source
    wrong = logits(PeftModel.from_pretrained(load_model(tiny_base, dtype="float32"), adapter).merge_and_unload(), ids)
    assert (wrong - unmerged).abs().max().item() > 100 * max(agree, 1e-7)


def test_kit_serve_over_the_nf4_base_answers_through_openai(nf4_modifier, kit_cache):
    from test_serve import KEY, chat, client, start_server

    _, job = nf4_modifier
    proc, url = start_server(job, kit_cache)
    try:
        c = client(url, KEY)
        assert [m.id for m in c.models.list().data] == ["auto", "base", "parity"]
        answer = chat(c, "parity", PROMPT)
        assert answer.model == "parity" and answer.choices[0].message.content
        assert answer.choices[0].message.content != chat(c, "base", PROMPT).choices[0].message.content
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
