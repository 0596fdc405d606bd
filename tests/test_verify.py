"""``kit verify``: every evaluation path gives the same answer on the tiny default (Qwen2, both
checkpointers) and on a tiny Llama 3 (torchtune LoRA model + kit's export path), and a corrupted
adapter fails with the check and the figure named."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_job, run_kit

pytestmark = pytest.mark.slow

CHECKS = ["logits", "generation", "inspect", "adapters", "adapter_folder"]


def report(job: Path) -> dict:
    return json.loads((job / "verify.json").read_text())


def assert_all_pass(rep: dict, paths: set[str]):
    assert [c["name"] for c in rep["checks"]] == CHECKS
    assert rep["passed"], [(c["name"], c["detail"]) for c in rep["checks"] if not c["passed"]]
    logits = rep["checks"][0]["figures"]["paths"]
    assert set(logits) == paths
    assert all(f["max_abs_diff"] <= 1e-4 and f["top1_agreement"] == 1.0 for f in logits.values())
    folder = rep["checks"][4]["figures"]
    assert folder["training_model"]["max_abs_diff"] <= 1e-4  # compared against torchtune's own model
    inspect = rep["checks"][2]["figures"]
    assert len(inspect["tasks"]) == 2
    for pkg in ("torch", "torchtune", "peft", "transformers", "inspect_ai"):
        assert rep["verified_configuration"]["versions"][pkg]


def test_verify_after_training_passes_on_the_tiny_default(trained_job):
    """verify.after_train is on by default: the session's trained job already carries its report."""
    rep = report(trained_job)
    assert_all_pass(rep, {"merge_in_memory", "direct"})
    summary = json.loads((trained_job / "summary.json").read_text())
    assert summary["verify"]["passed"] and summary["verify"]["report"] == "verify.json"
    md = (trained_job / "verify.md").read_text()
    assert md.startswith("# kit verify: PASSED") and "| torchtune | 0.6.1 |" in md


def test_verify_full_checkpointer(full_job, kit_cache, tmp_path):
    job = copy_job(full_job, tmp_path / "job")  # conftest.full_job: checkpointer=full, eval=none, verified after training
    rep = report(job)
    assert [c["name"] for c in rep["checks"]] == [c for c in CHECKS if c != "inspect"]  # eval=none: no Inspect run
    proc = run_kit(["verify", str(job)], kit_cache, tmp_path)  # the CLI, every check
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = report(job)
    assert_all_pass(rep, {"full", "merge_in_memory", "direct"})
    assert "full_model" in rep["checks"][2]["figures"]["strategies"]


def corrupt(job: Path, how: str) -> None:
    """A faulty export, recorded as it was written: the job's content hash is of the faulty adapter, so
    the identity check passes and verify's checks are what must catch it."""
    from kit.core.identity import adapter_hash

    adapter = job / "adapter"
    _corrupt(adapter, how)
    summary = json.loads((job / "summary.json").read_text())
    summary["checkpoint"]["content_hash"] = adapter_hash(adapter)
    (job / "summary.json").write_text(json.dumps(summary))


def _corrupt(adapter: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    if how == "alpha":
        config = json.loads((adapter / "adapter_config.json").read_text())
        config["lora_alpha"] = config["lora_alpha"] / 2
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        return
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in sorted(tensors) if "layers.0.mlp.down_proj.lora_B" in k)
    if how == "scale":
        tensors[key] = tensors[key] * 1.5
    else:  # permute the output rows
        tensors[key] = tensors[key][torch.randperm(tensors[key].shape[0], generator=torch.Generator().manual_seed(0))]
    save_file(tensors, adapter / "adapter_model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    "how,named",
    [
        ("scale", "PEFT(adapter) vs torchtune's training model: max|logit diff|"),
        ("permute", "PEFT(adapter) vs torchtune's training model: max|logit diff|"),
        ("alpha", "adapter_config.json lora_alpha=8.0 but torchtune.yaml trained lora_alpha=16.0"),
    ],
)
def test_corrupted_adapter_fails_naming_check_and_figure(trained_job, tmp_path, capsys, how, named):
    from kit.__main__ import main

    job = copy_job(trained_job, tmp_path / "job")
    corrupt(job, how)
    status = main(["verify", str(job), "verify.checks=[logits,adapter_folder]"])
    assert status == 1
    rep = report(job)
    folder = rep["checks"][1]
    assert not rep["passed"] and not folder["passed"] and named in folder["detail"]
    assert rep["checks"][0]["passed"]  # every path reads the same (corrupt) adapter: they agree with each other
    if how != "alpha":
        figure = folder["figures"]["training_model"]["max_abs_diff"]
        assert figure > 1e-2 and f"{figure:.3g}" in folder["detail"]
    out = capsys.readouterr().out
    assert "adapter_folder\tFAIL" in out and "**FAIL**" in (job / "verify.md").read_text()
    assert not json.loads((job / "summary.json").read_text())["verify"]["passed"]


def test_bad_check_name_is_one_line(trained_job, tmp_path, capsys):
    from kit.__main__ import main

    assert main(["verify", str(trained_job), "verify.checks=[logits,nope]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # verify.checks is a list of an enum: the schema refuses the value at compose time, naming key and choices
    assert len(err) == 1 and err[0].startswith("kit: error:"), err
    assert "'nope'" in err[0] and "verify.checks" in err[0]
    assert "expected one of [logits, generation, inspect, adapters, adapter_folder]" in err[0]


# -- Llama 3 family ---------------------------------------------------------------------
# No Llama 3 tiktoken tokenizer can be built offline here, so torchtune's recipe cannot train
# one. Instead: a tiny Llama 3 base (HF LlamaForCausalLM, the tiny default's tokenizer files),
# torchtune's own LoRA model for it (the builder kit's torchtune.yaml names) with non-zero
# adapter weights, saved by torchtune's FullModelHFCheckpointer exactly as the recipe saves an
# epoch, then exported by kit (kit/train/export.py) and verified.


def tiny_llama_base(tiny_base: Path, out: Path) -> Path:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    q = json.loads((tiny_base / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=q["vocab_size"],
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=q["bos_token_id"],
        eos_token_id=q["eos_token_id"],
        pad_token_id=q["pad_token_id"],
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=q["bos_token_id"], eos_token_id=q["eos_token_id"], pad_token_id=q["pad_token_id"]
    )
    model.save_pretrained(out, safe_serialization=True)
    for f in tiny_base.iterdir():
        if f.name not in ("config.json", "generation_config.json", "model.safetensors", "kit_tiny_spec.json"):
            shutil.copy2(f, out / f.name)
    return out


def llama_job(base: Path, job: Path, kind: str, cfg) -> dict:
    from omegaconf import OmegaConf
    from torchtune.modules.peft import get_adapter_state_dict, get_lora_module_names, get_merged_lora_ckpt
    from torchtune.training import FullModelHFCheckpointer

    from kit.core.model.families import _call, family_of
    from kit.train.export import export
    from kit.train.recipe_config import model_section
    from kit.verify.reference import keep_torchtune_adapter

    family = family_of(base)
    section = model_section(cfg, family, base)
    assert section["_component_"] == "torchtune.models.llama3.lora_llama3"
    args = dict(section)
    model = _call(args.pop("_component_"), **args)
    checkpointer = FullModelHFCheckpointer(
        checkpoint_dir=str(base),
        checkpoint_files=["model.safetensors"],
        model_type="LLAMA3",
        output_dir=str(job / "torchtune_out"),
    )
    model.load_state_dict(checkpointer.load_checkpoint()["model"], strict=False)  # as the recipe loads the base
    torch.manual_seed(5)
    with torch.no_grad():
        for p in get_adapter_state_dict(model.state_dict()).values():
            p.normal_(0, 0.05)  # "trained": lora_B starts at zero
    ckpt = {
        "adapter": get_adapter_state_dict(model.state_dict()),
        "adapter_config": {
            "r": section["lora_rank"],
            "lora_alpha": section["lora_alpha"],
            "peft_type": "LORA",
            "target_modules": get_lora_module_names(
                section["lora_attn_modules"], section["apply_lora_to_mlp"], section["apply_lora_to_output"]
            ),
        },
    }
    if kind == "full":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ckpt["model"] = get_merged_lora_ckpt(state, rank=section["lora_rank"], alpha=section["lora_alpha"])
    checkpointer.save_checkpoint(ckpt, epoch=0, adapter_only=kind == "adapter")
    epoch_dir = job / "torchtune_out" / "epoch_0"
    checkpoint = export(kind, epoch_dir, job, base)
    keep_torchtune_adapter(epoch_dir, job)
    OmegaConf.save(OmegaConf.create({"model": section}), job / "torchtune.yaml")
    shutil.rmtree(job / "torchtune_out")
    return checkpoint


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_verify_passes_on_a_tiny_llama3(tiny_base, tmp_path, kind):
    from omegaconf import OmegaConf

    from kit.core.config import compose
    from kit.verify import verify_checkpoint

    base = tiny_llama_base(tiny_base, tmp_path / "llama")
    cfg = compose("train", [f"model.path={base}", "logger=none", f"checkpointer={kind}", "verify.limit=4"])
    OmegaConf.resolve(cfg)
    job = tmp_path / "job"
    job.mkdir()
    checkpoint = llama_job(base, job, kind, cfg)
    rep = verify_checkpoint(cfg, job, base, checkpoint)
    assert_all_pass(rep, {"full", "merge_in_memory", "direct"} if kind == "full" else {"merge_in_memory", "direct"})
    assert rep["checks"][4]["figures"]["target_modules"] == 15  # q, k, v, o, gate, up, down x 2 layers + lm_head


# -- a wrong adapter fails in every dtype -------------------------------------------------
# Two planted faults, recorded as the job's own (content hash updated): a 2 % change to one
# lora_B, and another training run's adapter of the same LoRA config (conftest.full_job: the
# same r/alpha/targets, one epoch instead of four). Each must fail verify in fp32 and in bf16.


def other_runs_tensors(full_job: Path, base: Path) -> dict:
    """full_job's trained LoRA as kit exports it (torchtune adapter -> kit's conversion)."""
    from safetensors.torch import load_file

    from kit.core.model.families import family_of, read_config
    from kit.verify.reference import TUNE_ADAPTER

    return family_of(base).tune_to_peft_adapter(load_file(full_job / TUNE_ADAPTER), read_config(base))


def plant(job: Path, fault: str, full_job: Path) -> None:
    from safetensors.torch import load_file, save_file

    from kit.core.identity import adapter_hash

    weights = job / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    if fault == "lora_b_2pct":
        key = next(k for k in sorted(tensors) if "layers.0.mlp.down_proj.lora_B" in k)
        tensors[key] = tensors[key] * 1.02
    else:
        base = Path(json.loads((job / "summary.json").read_text())["base_model"])
        other = other_runs_tensors(full_job, base)
        assert set(other) == set(tensors)  # the same LoRA config: only the trained values differ
        tensors = other
    save_file(tensors, weights, metadata={"format": "pt"})
    summary = json.loads((job / "summary.json").read_text())
    summary["checkpoint"]["content_hash"] = adapter_hash(job / "adapter")
    (job / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("fault", ["lora_b_2pct", "other_run"])
def test_a_wrong_adapter_fails_in_fp32_and_bf16(trained_job, full_job, tmp_path, monkeypatch, fault):
    from kit.__main__ import main

    job = copy_job(trained_job, tmp_path / "job")
    plant(job, fault, full_job)
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        for dtype in ("fp32", "bf16"):
            status = main(["verify", str(job), "verify.checks=[logits,adapter_folder]", f"verify.dtype={dtype}", "logger=none"])
            rep = report(job)
            logits, folder = rep["checks"]
            assert status == 1 and rep["dtype"] == dtype and not rep["passed"]
            assert logits["passed"]  # every eval path reads the same (planted) adapter: they agree
            assert not folder["passed"]
            # caught twice, neither depending on the eval dtype: the exact tensors, the fp32 training model
            exact = folder["figures"]["exported_vs_training_weights"]
            assert exact["differing"] == (1 if fault == "lora_b_2pct" else exact["tensors"])
            assert "differs from the training run's weights" in folder["detail"]
            assert "fp32 PEFT(adapter) vs torchtune's training model" in folder["detail"]
            assert folder["figures"]["training_model"]["diff_over_limit"] > 10
            # `kit verify` alone applies kit's thread choice (here the user's OMP_NUM_THREADS)
            assert rep["threads"]["source"] == "OMP_NUM_THREADS" and torch.get_num_threads() == 1
            summary = json.loads((job / "summary.json").read_text())
            assert summary["status"] == "unverified" and not summary["verify"]["passed"]  # verify decides
    finally:
        torch.set_num_threads(threads)


def test_a_tampered_adapter_is_a_failed_verify_with_a_report(trained_job, tmp_path):
    """An adapter changed after it was recorded (its content hash differs): kit verify exits 1 with a
    report naming the change, and the job's summary says verify failed and the job is unverified."""
    from safetensors.torch import load_file, save_file

    from kit.__main__ import main

    job = copy_job(trained_job, tmp_path / "job")
    assert json.loads((job / "summary.json").read_text())["verify"]["passed"]
    weights = job / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in sorted(tensors) if ".lora_B." in k)
    tensors[key] = tensors[key] * 1.02
    save_file(tensors, weights, metadata={"format": "pt"})  # the recorded content hash is left as it was
    assert main(["verify", str(job), "verify.checks=[adapter_folder]", "logger=none"]) == 1
    [check] = report(job)["checks"]
    assert check["name"] == "checkpoint_identity" and not check["passed"] and "changed since" in check["detail"]
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "unverified" and not summary["verify"]["passed"]


def bf16_context(job: Path, tmp: Path, adapter: Path | None = None):
    from dataclasses import replace

    from kit.core.config import compose
    from kit.core.jobdir import checkpoint_of, read_summary
    from kit.verify import make_context

    summary = read_summary(job)
    cfg = compose("train", ["verify.dtype=bf16", "logger=none"])
    checkpoint = checkpoint_of(job, summary)
    if adapter is not None:
        checkpoint = replace(checkpoint, path=adapter)
    return make_context(cfg, job, Path(summary["base_model"]), checkpoint, [], tmp)


def test_bf16_eval_path_limits_come_from_the_rounding_and_catch_another_runs_adapter(trained_job, full_job, tmp_path):
    """On real logits: every bf16 eval path of the right adapter is within the rounding rule of
    the fp32 reference; the direct path computing another run's adapter (no top-1 rule could
    tell: it is judged by relative error and KL) is far outside it."""
    from safetensors.torch import save_file

    from kit.verify.tolerance import compare_logits

    job = copy_job(trained_job, tmp_path / "job")
    other = tmp_path / "other"
    shutil.copytree(job / "adapter", other)
    save_file(other_runs_tensors(full_job, Path(report(job)["base_model"])), other / "adapter_model.safetensors")
    ctx, wrong = bf16_context(job, tmp_path), bf16_context(job, tmp_path, other)
    try:
        ref, rounding = ctx.logits("reference"), ctx.rounding()
        assert rounding["rel_max"] > 0 and rounding["kl_max"] > 0
        for name in ctx.eval_paths():
            f = compare_logits(ref, ctx.logits(name), ctx.tol, rounding)
            assert f["passed"] and max(f["over_rounding"].values()) < 3, (name, f)
        bad = compare_logits(ref, wrong.logits("direct"), ctx.tol, rounding)
        assert not bad["passed"] and bad["over_rounding"]["rel_mean"] > 10, bad
    finally:
        ctx.close()
        wrong.close()


def test_bf16_merge_path_is_the_model_eval_merge_loads(trained_job, tmp_path):
    """verify's merge path is built by eval=merge's own code: its logits equal those of the folder
    eval=merge writes, loaded as Inspect's hf provider loads it, bit for bit. The construction
    verify used before (fp32 merge, then ``.to(bf16)``) also casts rotary inv_freq and differs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kit.core.model.loader import load_model
    from kit.lora.merge import merge_to_folder

    job = copy_job(trained_job, tmp_path / "job")
    ctx = bf16_context(job, tmp_path)
    try:
        merge_to_folder(ctx.base, ctx.adapter, tmp_path / "merged", "cpu", "bf16")
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.bfloat16, device_map="cpu")
        mine, evals = ctx.logits("merge"), ctx.run(loaded)
        assert all(torch.equal(a, b) for a, b in zip(mine, evals))
        old = PeftModel.from_pretrained(load_model(ctx.base, dtype="fp32"), ctx.adapter).merge_and_unload()
        old = old.to(torch.bfloat16)
        assert {b.dtype for b in old.buffers()} == {torch.bfloat16} != {b.dtype for b in loaded.buffers()}
        assert max((a - b).abs().max().item() for a, b in zip(ctx.run(old), evals)) > 0
    finally:
        ctx.close()
