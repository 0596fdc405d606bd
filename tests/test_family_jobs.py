"""A trained job per family, in process (kit.job.pipeline.run_job), on the tiny model of each family
(kit.core.model.tiny_families) and the default task: the bundled parity data and the default trainer
(8 epochs, 496 steps, gradient clipped at 1.0), scored against the untrained base on the first 40 held-out questions of
``kit/parity`` (``tasks.limit=40``, for the CI budget: 19 even, 21 odd; all 100 score 1.00 for every family,
docs/models.md). Each job runs kit's whole training pipeline:
torchtune's recipe with the family's builder, tokenizer and checkpointer, kit's export (Phi: the fused
adapter kit writes), the eval (``eval=auto``: direct on CPU), and verify after training (every eval path
gives the same answer: logits along every path, merge / merge_in_memory / direct scores and
completions, the adapter folder against torchtune's own training model). The default tiny Qwen2 is the
session's ``trained_job`` (tests/test_verify.py, tests/test_train_cli.py); Llama 3 here is Llama 3.2's
shape (tied, scaled RoPE) with an HF tokenizer (no tiktoken model can be built offline).
"""

import json
import shutil
from pathlib import Path

import pytest

from kit.core.model.families import family_of, read_config

pytestmark = pytest.mark.slow
NAMES = ["qwen3", "llama3", "llama2", "mistral", "gemma", "gemma2", "phi3", "phi4"]
# verify after training: logits along every path, the three strategies' scores and completions, the adapter
# folder against torchtune's training model. ``generation`` (batch and sampling) and ``adapters`` (merge/unmerge
# rounds on one resident base) are the same code for every family; tests/test_verify.py runs them on the default job
# and on a tiny Llama 3.
VERIFY = ["verify.limit=4", "verify.checks=[logits,inspect,adapter_folder]"]
TASK = "tasks.limit=40"


@pytest.fixture(scope="session", params=NAMES)
def family_job(request, kit_cache, tmp_path_factory):
    """(family, job dir, summary) of a default-task job on the family's tiny model, once per session."""
    from omegaconf import OmegaConf

    from kit.core.config import compose
    from kit.core.identity import RunIdentity
    from kit.core.model.tiny import tiny_family_dir
    from kit.job.pipeline import run_job

    name = request.param
    base = tiny_family_dir(name)
    tied = family_of(base).tied(read_config(base))
    overrides = [f"model.path={base}", "logger=none", f"lora.apply_to_output={str(not tied).lower()}", TASK, *VERIFY]
    cfg = compose("train", overrides)
    OmegaConf.resolve(cfg)
    job = tmp_path_factory.mktemp(f"job_{name}") / "job"
    run_job(cfg, job, RunIdentity("families", name), overrides)
    return name, job, json.loads((job / "summary.json").read_text())


def test_the_family_learns_the_parity_task(family_job, record_property):
    name, job, summary = family_job
    assert summary["status"] == "done", summary.get("error")
    before, after = summary["base_scores"]["parity"]["mean"], summary["scores"]["parity"]["mean"]
    record_property("parity_before_after", f"{before:.2f} -> {after:.2f}")  # docs/models.md's table (--junitxml)
    assert before <= 0.1 and after >= 0.9, (name, before, after)  # always one answer scores 0.475 or 0.525
    train = summary["train"]
    assert train["torchtune_config"].endswith("torchtune.yaml") and train["final_loss"] < 0.2 * train["first_loss"]
    fmt = train["prompt_format"]
    assert fmt["tokenizer"] == "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer"
    assert fmt["format"].startswith("kit plain" if name == "mistral" else "the model folder's chat template")


def test_verify_passes_and_merge_merge_in_memory_direct_agree(family_job, record_property):
    name, job, summary = family_job
    report = json.loads((job / "verify.json").read_text())
    assert report["passed"] and summary["verify"]["passed"], [c["detail"] for c in report["checks"] if not c["passed"]]
    checks = {c["name"]: c for c in report["checks"]}
    strategies = checks["inspect"]["figures"]["strategies"]
    assert set(strategies) == {"merge", "merge_in_memory", "direct"}
    assert len({json.dumps(s["scores"], sort_keys=True) for s in strategies.values()}) == 1
    assert all(s["completions_differing"] == 0 for s in strategies.values())
    record_property("adapter_folder_vs_training_model", checks["adapter_folder"]["figures"]["training_model"]["max_abs_diff"])
    assert checks["adapter_folder"]["figures"]["training_model"]["max_abs_diff"] < 1e-4


def test_verify_catches_a_planted_fault(family_job, tmp_path, record_property):
    """``lora_B`` of layer 0's down_proj x1.5 in the exported adapter, the job's content hash updated to
    match (as a faulty export records it): verify's adapter_folder check must fail, naming the figure."""
    from safetensors.torch import load_file, save_file

    from kit.__main__ import main
    from kit.core.identity import adapter_hash

    name, job, _ = family_job
    copy = tmp_path / "job"
    shutil.copytree(job, copy)
    weights = copy / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in sorted(tensors) if "layers.0.mlp.down_proj.lora_B" in k)
    tensors[key] = tensors[key] * 1.5
    save_file(tensors, weights, metadata={"format": "pt"})
    summary = json.loads((copy / "summary.json").read_text())
    summary["checkpoint"]["content_hash"] = adapter_hash(copy / "adapter")
    (copy / "summary.json").write_text(json.dumps(summary))
    assert main(["verify", str(copy), "verify.checks=[adapter_folder]"]) == 1
    folder = json.loads((copy / "verify.json").read_text())["checks"][0]
    record_property("planted_fault_diff", folder["figures"]["training_model"]["max_abs_diff"])
    assert not folder["passed"] and "PEFT(adapter) vs torchtune's training model" in folder["detail"]
    assert folder["figures"]["training_model"]["max_abs_diff"] > 1e-2, name


def test_the_job_replays_with_the_familys_own_checkpointer_and_builder(family_job):
    """torchtune.yaml names what trained: the family's builder and checkpointer (Qwen3, Gemma 2: kit's)."""
    from omegaconf import OmegaConf

    name, job, summary = family_job
    base = Path(summary["base_model"])
    fam = family_of(base)
    tt = OmegaConf.load(job / "torchtune.yaml")
    assert tt.model._component_ == fam.lora_builder(base)[0]
    assert tt.checkpointer._component_ == fam.checkpointer and tt.checkpointer.model_type == fam.model_type
    assert ("apply_lora_to_output" in tt.model) == fam.output_lora
