"""phase=compress: each format's round trip on the tiny base, its manifest, and the phase in-process."""

from __future__ import annotations

import json

import pytest
import torch

from kit.core.errors import KitError
from kit.core.model.compress import FORMATS, MANIFEST, compress_folder, dequantized_state, read_manifest, read_state

# The worst |dequant(Wq) - W| of a weight relative to its largest |W|: half a quantization step of
# each format (int8/Q8_0: 1/254, Q4_0: 1/14 of a 32-block's max, NF4: its widest code gap ~0.28/2).
BOUND = {"int8": 0.0045, "gguf_q8_0": 0.0045, "gguf_q4_0": 0.15, "nf4": 0.16}


@pytest.fixture(scope="module", params=FORMATS)
def compressed(request, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"compressed_{request.param}") / "compressed"
    return request.param, out, compress_folder(tiny_base, out, request.param)


def test_dequantized_weights_are_within_half_a_step(compressed, tiny_base):
    fmt, out, manifest = compressed
    source, back = read_state(tiny_base), dequantized_state(out)
    assert manifest["quantized"] and set(back) == set(source)
    for name in source:
        err = (back[name].float() - source[name].float()).abs().max().item()
        if name in manifest["quantized"]:
            assert 0 < err <= BOUND[fmt] * source[name].float().abs().max().item(), (fmt, name, err)
        else:
            assert err == 0, (fmt, name)  # norms and other small tensors are stored as they were


def test_the_manifest_names_source_format_and_the_bytes(compressed, tiny_base):
    from kit.core.identity import base_fingerprint

    fmt, out, manifest = compressed
    assert read_manifest(out) == json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == fmt and manifest["source"]["fingerprint"] == base_fingerprint(tiny_base)
    assert manifest["bytes"] < manifest["source"]["bytes"]


def test_changed_bytes_are_refused(compressed, tmp_path):
    import shutil

    _, out, manifest = compressed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / manifest["weights"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(KitError, match="sha256") as e:
        dequantized_state(copy)
    assert "\n" not in str(e.value)


def test_an_unknown_format_is_one_line_naming_it_and_the_choices(tiny_base, tmp_path):
    with pytest.raises(KitError) as e:
        compress_folder(tiny_base, tmp_path / "x", "q3_k")
    message = str(e.value)
    assert "'q3_k'" in message and all(f in message for f in FORMATS) and "\n" not in message
    assert not (tmp_path / "x").exists()


def test_nf4_is_the_tensor_torchtune_computes_with(tiny_base, tmp_path):
    """The eval path's nf4 weights equal torchao's own dequantization of to_nf4(W), torchtune's QLoRA base."""
    from torchao.dtypes.nf4tensor import to_nf4

    manifest = compress_folder(tiny_base, tmp_path / "nf4", "nf4")
    source, back = read_state(tiny_base), dequantized_state(tmp_path / "nf4")
    for name in manifest["quantized"]:
        theirs = to_nf4(source[name].to(torch.bfloat16), 64, 256).get_original_weight()
        assert torch.equal(back[name], theirs.to(back[name].dtype)), name


def test_the_phase_records_kl_perplexity_and_bytes(tiny_base, tmp_path):
    """phase=compress in-process, as `python -m kit train phase=compress` runs it."""
    from omegaconf import OmegaConf

    from kit.core.config import compose
    from kit.core.identity import RunIdentity
    from kit.job.pipeline import run_job

    settings = ["phase.compress.format=gguf_q4_0", "phase.compress.heldout_rows=8", "phase.compress.dequantized=true"]
    overrides = [f"model.path={tiny_base}", "logger=none", "phase=compress", *settings]
    cfg = compose("train", overrides)
    OmegaConf.resolve(cfg)
    run_job(cfg, tmp_path / "job", RunIdentity("compress", "q4"), overrides)
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "done", summary.get("error")
    block = summary["compress"]
    assert block["format"] == "gguf_q4_0" and block["bytes"] < block["source"]["bytes"]
    assert block["kl"] > 0 and block["ppl_compressed"] != block["ppl_source"] and block["tokens"] > 8
    assert read_manifest(tmp_path / "job" / "compressed")["sha256"] == block["sha256"]
    # the dequantized base is a plain model folder computing with exactly the compressed weights
    from kit.core.model.loader import load_model

    model = load_model(block["dequantized"])
    back = dequantized_state(tmp_path / "job" / "compressed")
    assert all(torch.equal(p, back[n]) for n, p in model.state_dict().items() if n in back)


def test_the_sweep_table_shows_size_and_quality_only_for_compress_jobs():
    from kit.sweep.report import COMPRESS_HEAD, table
    from kit.sweep.rows import compress_cell

    entry = {"format": "int8", "bytes": 240240, "zstd_bytes": 223489, "ratio": 2.647, "kl": 1.56e-06, "load_s": 0.01}
    row = {"job": 0, "overrides": ["phase.compress.format=int8"], "status": "done", "scores": {}, "base_scores": {}}
    plain = table({"jobs": [row], "swept": []})
    assert not any(h in plain for h in COMPRESS_HEAD)
    shown = table({"jobs": [{**row, "compress": compress_cell(entry)}], "swept": []})
    assert all(h in shown for h in COMPRESS_HEAD) and "240.24 KB" in shown and "1.56e-06" in shown


def test_int8_is_torchaos_int8_weight_only(tiny_base):
    """int8's dequantized weights equal what torchao's Int8WeightOnlyConfig computes with (PEFT's int8 base)."""
    import warnings

    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from kit.core.model.compress import dequantize_weight, quantize_weight

    name, w = next((n, t) for n, t in read_state(tiny_base).items() if n.endswith("q_proj.weight"))
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    linear.weight.data.copy_(w)
    with warnings.catch_warnings():  # its version-1 deprecation notice
        warnings.simplefilter("ignore")
        quantize_(linear, Int8WeightOnlyConfig())
    ours = dequantize_weight(quantize_weight(w, "int8"), list(w.shape), "int8")
    assert torch.equal(linear.weight.dequantize().float(), ours), name
