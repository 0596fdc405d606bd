"""kit.core.model.loader: the Auto class from config.json, load arguments passed through,
safetensors only, no remote code, nothing fetched, clear one-line errors."""

import json
import shutil

import pytest
import torch

from kit.core.config import compose
from kit.core.errors import KitError
from kit.core.model.loader import load_model, load_model_from_config, load_tokenizer, loader_for


def save_tiny(model_cls, config, folder):
    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    return save_tiny(T5ForConditionalGeneration, config, tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return save_tiny(BertForMaskedLM, config, tmp_path_factory.mktemp("bert"))


def test_auto_picks_causal_seq2seq_and_masked(tiny_base, t5_dir, bert_dir):
    from transformers import BertForMaskedLM, Qwen2ForCausalLM, T5ForConditionalGeneration

    for folder, loader, cls in [
        (tiny_base, "causal_lm", Qwen2ForCausalLM),
        (t5_dir, "seq2seq_lm", T5ForConditionalGeneration),
        (bert_dir, "masked_lm", BertForMaskedLM),
    ]:
        assert loader_for(folder) == loader
        model = load_model(folder)
        assert type(model) is cls and not model.training


@pytest.mark.parametrize(
    "config,loader",
    [
        ({"model_type": "llama"}, "causal_lm"),
        ({"model_type": "bert"}, "masked_lm"),  # has a causal head class too; an encoder is masked_lm
        ({"model_type": "t5", "is_encoder_decoder": True}, "seq2seq_lm"),
        ({"model_type": "bert", "architectures": ["BertLMHeadModel"]}, "causal_lm"),  # the class decides
    ],
)
def test_loader_for_without_or_with_architectures(config, loader):
    assert loader_for(config) == loader


def test_unsupported_model_type_lists_supported_ones():
    with pytest.raises(KitError) as e:
        loader_for({"model_type": "nosuch_arch", "architectures": ["NosuchModel"]})
    msg = str(e.value)
    assert "\n" not in msg and "'nosuch_arch'" in msg
    for expected in ("causal_lm: ", "qwen2", "llama", "seq2seq_lm: ", "t5", "masked_lm: ", "bert"):
        assert expected in msg


def test_weights_match_the_checkpoint_and_dtype_passes_through(tiny_base):
    from safetensors.torch import load_file

    saved = load_file(tiny_base / "model.safetensors")
    model = load_model(tiny_base)
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    half = load_model(tiny_base, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    eager = load_model(tiny_base, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


def test_pickled_weights_refused_unless_allowed(tiny_base, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(KitError, match="allow_pickle"):
        load_model(folder)
    model = load_model(folder, allow_pickle=True)
    assert torch.equal(model.lm_head.weight, load_model(tiny_base).lm_head.weight)


def test_remote_code_never_runs_unless_trusted(tiny_base, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_base, folder)
    marker = tmp_path / "code_ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evil",
        architectures=["EvilForCausalLM"],
        auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(KitError, match="evil"):
        load_model(folder)
    with pytest.raises(KitError, match="trust_remote_code"):
        load_model(folder, loader="causal_lm")
    assert not marker.exists()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"dtype": "float8"}, "dtype 'float8'"),
        ({"loader": "vision"}, "model.loader 'vision'"),
        ({"load_in_4bit": True, "load_in_8bit": True}, "at most one"),
    ],
)
def test_bad_load_arguments(tiny_base, kwargs, needle):
    with pytest.raises(KitError, match=needle):
        load_model(tiny_base, **kwargs)


@pytest.mark.parametrize("flag", ["load_in_4bit", "load_in_8bit"])
def test_quantized_load_says_what_is_missing(tiny_base, flag):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") and torch.cuda.is_available():
        pytest.skip("bitsandbytes and CUDA are both here: quantized loading can run")
    missing = "bitsandbytes" if importlib.util.find_spec("bitsandbytes") is None else "CUDA"
    with pytest.raises(KitError, match=f"{flag} needs .*{missing}"):
        load_model(tiny_base, **{flag: True})


def test_not_a_model_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(KitError, match="huggingface-cli download"):
        load_model(tmp_path)


def test_load_from_config_node(tiny_base):
    cfg = compose("train", ["model.dtype=bfloat16"])
    model = load_model_from_config(cfg.model)
    assert model.dtype == torch.bfloat16 and type(model).__name__ == "Qwen2ForCausalLM"
    assert load_model_from_config(cfg.model, dtype="float32").dtype == torch.float32


def test_hub_preset_is_not_fetched_and_error_says_how(kit_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("KIT_ALLOW_NETWORK", raising=False)
    cfg = compose("train", ["model=qwen2_5_0_5b", f"model.cache_dir={tmp_path}"])
    with pytest.raises(KitError) as e:
        load_model_from_config(cfg.model)
    assert "Qwen/Qwen2.5-0.5B" in str(e.value) and "KIT_ALLOW_NETWORK=1" in str(e.value)
    assert "huggingface-cli download" in str(e.value) and not any(tmp_path.iterdir())


def test_tokenizer_loads_locally(tiny_base):
    tok = load_tokenizer(tiny_base)
    assert tok.eos_token == "<|im_end|>"
