"""``kit describe`` (from config.json on the meta device) and ``kit plugins`` (real readiness checks)."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from kit.__main__ import main as kit_main
from kit.commands.describe import describe, describe_folder
from kit.core.model.loader import load_model

LLAMA_3_1_8B = {  # the real config.json values of meta-llama/Llama-3.1-8B
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def llama_parameter_count(c: dict) -> int:
    """Counted by hand: embeddings, lm_head, per layer q/k/v/o + gated MLP + 2 norms, final norm."""
    h, kv = c["hidden_size"], c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * c["intermediate_size"] + 2 * h
    embed = c["vocab_size"] * h * (1 if c["tie_word_embeddings"] else 2)
    return c["num_hidden_layers"] * layer + embed + h


def fake_hub_cache(cache: Path, repo_id: str, config: dict) -> None:
    """The HF cache layout with only config.json fetched (as `huggingface-cli download ID config.json`)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_describe_from_config_matches_the_loaded_model(tiny_base):
    model = load_model(tiny_base)
    meta = describe_folder(tiny_base)
    loaded = describe(model)
    assert loaded.pop("on_meta") is False
    targets = set(loaded.pop("lora_targets"))  # the same modules; config.json alone lists them in torchtune's order
    assert {k: meta[k] for k in loaded} == loaded and set(meta["lora_targets"]) == targets
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    c = model.config
    assert (meta["layers"], meta["heads"], meta["kv_heads"], meta["hidden"], meta["mlp"], meta["vocab"]) == (
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.hidden_size,
        c.intermediate_size,
        c.vocab_size,
    )
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    assert meta["weights"]["bytes"] == (tiny_base / "model.safetensors").stat().st_size
    assert meta["torchtune"]["builder"] == "torchtune.models.qwen2.lora_qwen2"


def test_describe_8b_preset_from_cached_config_only(kit_cache, tmp_path, capsys):
    hub = tmp_path / "hub"
    fake_hub_cache(hub, "meta-llama/Llama-3.1-8B", LLAMA_3_1_8B)
    assert kit_main(["describe", "model=llama3_1_8b", f"model.cache_dir={hub}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == llama_parameter_count(LLAMA_3_1_8B) == 8_030_261_248
    assert (info["layers"], info["heads"], info["kv_heads"], info["head_dim"]) == (32, 32, 8, 128)
    assert info["dtype"] == "bfloat16" and info["tied_embeddings"] is False
    assert info["weights"]["files"] == [] and info["torchtune"]["builder"].endswith("lora_llama3_1")
    assert kit_main(["describe", "model=llama3_1_8b", f"model.cache_dir={hub}"]) == 0
    table = capsys.readouterr().out
    assert "8,030,261,248" in table and "none here (config.json only)" in table


@pytest.mark.parametrize("tied", [True, False])
def test_tied_embeddings_seen(tmp_path, tied):
    config = {
        **LLAMA_3_1_8B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "tie_word_embeddings": tied,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = describe_folder(tmp_path)
    assert info["tied_embeddings"] is tied and info["parameters"] == llama_parameter_count(config)


def test_describe_encoder_decoder_and_masked(tmp_path):
    from transformers import BertConfig, T5Config

    T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2).save_pretrained(tmp_path / "t5")
    BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "bert"
    )
    t5, bert = describe_folder(tmp_path / "t5"), describe_folder(tmp_path / "bert")
    assert (t5["loader"], t5["mlp"], t5["hidden"], t5["torchtune"]) == ("seq2seq_lm", 32, 16, None)
    assert (bert["loader"], bert["mlp"], bert["tied_embeddings"]) == ("masked_lm", 32, True)
    assert "q" in t5["lora_targets"] and "query" in bert["lora_targets"]


def test_describe_bad_input_one_line(kit_cache, capsys):
    assert kit_main(["describe", "model.path=/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert err.count("kit: error:") == 1 and "/no/such/model" in err


def plugins(capsys, monkeypatch, env_path=None) -> list[dict]:
    """``kit plugins --json`` in-process, with PATH as given (its checks look for executables for real)."""
    if env_path:
        monkeypatch.setenv("PATH", env_path)
    assert kit_main(["plugins", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plugins_lists_every_group_and_checks_for_real(capsys, monkeypatch):
    from kit.eval.strategies import STRATEGIES

    rows = {(r["group"], r["name"]): r for r in plugins(capsys, monkeypatch)}
    assert {n for g, n in rows if g == "eval"} == set(STRATEGIES)
    for key in [
        ("checkpointer", "adapter"),
        ("checkpointer", "full"),
        ("launcher", "basic"),
        ("launcher", "submitit_slurm"),
        ("logger", "wandb"),
        ("logger", "none"),
        ("loader", "causal_lm"),
        ("loader", "seq2seq_lm"),
        ("loader", "masked_lm"),
    ]:
        assert key in rows
    assert rows[("launcher", "submitit_slurm")]["ready"] == (shutil.which("sbatch") is not None)
    quantized = rows[("loader", "quantized")]
    has_bnb, has_cuda = importlib.util.find_spec("bitsandbytes") is not None, torch.cuda.is_available()
    assert quantized["ready"] == (has_bnb and has_cuda)
    assert ("bitsandbytes not installed" in quantized["missing"]) == (not has_bnb)
    assert ("no CUDA device" in quantized["missing"]) == (not has_cuda)


def test_plugins_sees_a_missing_executable(capsys, monkeypatch):
    rows = {(r["group"], r["name"]): r for r in plugins(capsys, monkeypatch, env_path=str(Path(sys.executable).parent))}
    assert rows[("launcher", "submitit_slurm")]["missing"] == ["no sbatch on PATH"]
    assert rows[("launcher", "basic")]["ready"]


def test_vllm_strategy_needs_vllm_and_cuda():
    from kit.eval.strategies import STRATEGIES

    missing = STRATEGIES["vllm"].missing()
    assert ("vllm not installed" in missing) == (importlib.util.find_spec("vllm") is None)
    assert ("no CUDA device" in missing) == (not torch.cuda.is_available())


def test_plugins_says_llama_cpp_is_not_supported_and_its_gguf_claim_holds(capsys, monkeypatch, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from kit.commands.plugins import table
    from kit.core.model.compress import SEP, WEIGHTS, compress_folder

    rows = plugins(capsys, monkeypatch)
    llama = next(r for r in rows if (r["group"], r["name"]) == ("runtime", "llama_cpp"))
    assert llama["ready"] is False and llama["missing"] == ["not supported by kit (source build only)"]
    assert "source build on PyPI" in llama["what"] and f"into {WEIGHTS}, not .gguf files" in llama["what"]
    assert next(r for r in rows if (r["group"], r["name"]) == ("runtime", "pytorch"))["ready"]
    assert "runtime:" in table(rows) and "llama.cpp (GGUF runtime): not supported" in table(rows)
    # what the row says of kit's gguf_* formats: GGML blocks inside a safetensors file, no .gguf written
    (src := tmp_path / "src").mkdir()
    save_file({"w": torch.randn(4, 64)}, str(src / "model.safetensors"))
    for fmt in ("gguf_q8_0", "gguf_q4_0"):
        compress_folder(src, out := tmp_path / fmt, fmt)
        assert not list(out.rglob("*.gguf"))
        with safe_open(str(out / WEIGHTS), framework="pt") as f:
            assert list(f.keys()) == [f"w{SEP}blocks"] and f.get_tensor(f"w{SEP}blocks").dtype == torch.uint8
