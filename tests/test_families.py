"""Every model family kit trains, proven on a tiny model of each (kit.core.model.tiny_families: transformers'
own config class of the family, random weights, a small tokenizer, the family's chat template).

Unit layer, per family: HF -> torchtune -> HF weights exact and the same logits; torchtune's LoRA model
against PEFT on HF with kit's exported adapter (fp32, tests/test_conversion.py's limit); torchtune's own
q/k ``lora_B`` permutation checked for every family; a full checkpoint written by the recipe's
checkpointer equals base + the exported adapter's delta; the family's own traps (Qwen3's norm order,
Gemma 2's soft-capping and norm keys, Phi's fused projections); the prompt tokens trained on are the
prompt tokens every eval path feeds; ``kit describe`` from config.json alone.
Trained jobs per family (parity learns, the three strategies agree, verify passes and catches a planted
fault): tests/test_family_jobs.py.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kit.core.model.families import FAMILIES, _call, family_of, read_config

TOL = 1e-4  # max |logit diff| in fp32, as tests/test_conversion.py
NAMES = list(FAMILIES)
LORA = {
    "lora_attn_modules": ["q_proj", "k_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "lora_rank": 4,
    "lora_alpha": 8.0,
    "lora_dropout": 0.0,
}


@pytest.fixture(params=NAMES)
def family(request, kit_cache):
    """(family name, the folder of its tiny model), built once per session cache."""
    from kit.core.model.tiny import tiny_family_dir

    base = tiny_family_dir(request.param)
    assert family_of(base).name == request.param  # the tiny model is recognized as its own family
    return request.param, base


def hf_model(base: Path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **family_of(base).load_args()).eval()


def saved_weights(base: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(base / "model.safetensors")


def with_uneven_norms(weights: dict) -> dict:
    """Norm weights moved off their init (all 1, or all 0 for Gemma's 1 + w): a norm applied in the wrong
    place or order, or a norm key mapped to another norm, now changes the logits."""
    g = torch.Generator().manual_seed(1)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g) if "norm" in k else v for k, v in weights.items()}


def lora_section(base: Path, **changes) -> dict:
    fam, c = family_of(base), read_config(base)
    section = {**LORA, "apply_lora_to_output": not fam.tied(c), **changes}
    if not fam.output_lora:
        section.pop("apply_lora_to_output")
    return section


def tune_lora_model(base: Path, section: dict, weights: dict, converted: bool = False):
    """torchtune's LoRA model of the family (the builder kit's torchtune.yaml names) on the HF weights
    (``converted``: already in torchtune's names), with non-zero ("trained") adapter weights."""
    from torchtune.modules.peft import get_adapter_params

    fam, c = family_of(base), read_config(base)
    component, shape = fam.builder(c)
    model = _call(component, **section, **shape).eval()
    missing, unexpected = model.load_state_dict(weights if converted else fam.hf_to_tune(weights, c), strict=False)
    assert not unexpected and missing and all("lora" in k for k in missing)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in get_adapter_params(model).values():
            p.normal_(0, 0.2)
    return model


def ids(base: Path, length: int = 40):
    return torch.randint(0, read_config(base)["vocab_size"], (2, length), generator=torch.Generator().manual_seed(3))


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def peft_from(base: Path, tensors: dict, config: dict, folder: Path, weights: dict | None = None):
    from peft import PeftModel
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    model = hf_model(base)
    if weights is not None:
        model.load_state_dict(weights, strict=False)
    return PeftModel.from_pretrained(model, folder).eval()


# -- HF <-> torchtune ----------------------------------------------------------------------------


def test_hf_torchtune_hf_round_trip_is_exact_and_torchtune_computes_hf_logits(family, record_property):
    name, base = family
    fam, c = family_of(base), read_config(base)
    weights = with_uneven_norms(saved_weights(base))
    back = fam.tune_to_hf(fam.hf_to_tune(weights, c), c)
    assert set(back) == set(weights) and all(torch.equal(back[k], weights[k]) for k in back)
    hf = hf_model(base)
    hf.load_state_dict(weights, strict=False)
    component, shape = fam.base_builder(c)
    tune = _call(component, **shape).eval()
    tune.load_state_dict(fam.hf_to_tune(weights, c), strict=True)
    with torch.no_grad():
        expected, got = hf(ids(base)).logits, tune(ids(base))
    assert expected.abs().max() > 0.3  # not a degenerate model
    record_property("hf_vs_torchtune_logits", max_diff(expected, got))  # docs/models.md's table (--junitxml)
    assert max_diff(expected, got) < TOL, name


# -- torchtune LoRA -> PEFT ----------------------------------------------------------------------


def test_torchtune_lora_equals_peft_on_hf_with_kits_exported_adapter(family, tmp_path, record_property):
    name, base = family
    fam, c = family_of(base), read_config(base)
    section = lora_section(base)
    tune = tune_lora_model(base, section, saved_weights(base))
    from torchtune.modules.peft import get_adapter_params

    adapter = {k: v.detach().clone() for k, v in get_adapter_params(tune).items()}
    peft = peft_from(base, fam.tune_to_peft_adapter(adapter, c), fam.peft_config(section, base), tmp_path)
    with torch.no_grad():
        got, expected = peft(ids(base)).logits, tune(ids(base))
        with peft.disable_adapter():
            bare = peft(ids(base)).logits
    record_property("peft_vs_torchtune_lora_logits", max_diff(got, expected))
    record_property("adapter_changes_logits_by", max_diff(got, bare))
    assert max_diff(got, expected) < TOL, name
    assert max_diff(got, bare) > 1e-2  # the adapter really changes the output


def test_torchtunes_own_qk_permutation_is_right_exactly_where_kit_keeps_it(family, tmp_path):
    """torchtune 0.6.1's ``tune_to_peft_adapter_weights`` permutes q/k lora_B for the Llama rotary layout:
    right for the families whose HF q/k weights it permutes too, wrong (kit undoes it) for Qwen2 and Qwen3.
    Phi: torchtune writes no PEFT adapter at all; kit's fused export is the only one."""
    from torchtune.models.convert_weights import tune_to_peft_adapter_config, tune_to_peft_adapter_weights
    from torchtune.modules.peft import get_adapter_params

    from kit.core.model.families._family import lora_module_names, standard_conversion_args

    name, base = family
    fam, c = family_of(base), read_config(base)
    if not fam.torchtune_writes_peft:
        assert name in ("phi3", "phi4")
        pytest.skip("torchtune writes no PEFT adapter for Phi (kit's own export is tested above)")
    section = lora_section(base)
    tune = tune_lora_model(base, section, saved_weights(base))
    adapter = {k: v.detach().clone() for k, v in get_adapter_params(tune).items()}
    tensors = tune_to_peft_adapter_weights(adapter, **standard_conversion_args(c))
    config = tune_to_peft_adapter_config({"r": 4, "lora_alpha": 8.0, "target_modules": lora_module_names(section)})
    peft = peft_from(base, tensors, {**config, "peft_type": "LORA", "task_type": "CAUSAL_LM"}, tmp_path)
    with torch.no_grad():
        diff = max_diff(peft(ids(base)).logits, tune(ids(base)))
    assert (diff < TOL) == fam.hf_weights_permuted, (name, diff)
    assert fam.hf_weights_permuted == (name not in ("qwen2", "qwen3"))


# -- a full checkpoint is base + delta -----------------------------------------------------------


def torchtune_epoch(base: Path, job: Path, section: dict, kind: str) -> Path:
    """An epoch folder as the recipe writes it: the family's checkpointer (the one torchtune.yaml names)
    loads the base, saves the merged model (full) or the adapter; then kit's export of it."""
    from omegaconf import OmegaConf
    from torchtune.modules.peft import get_adapter_state_dict, get_lora_module_names, get_merged_lora_ckpt

    from kit.train.export import export

    fam = family_of(base)
    component, shape = fam.builder(read_config(base))
    full_section = {"_component_": component, **section, **shape}
    job.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": full_section}), job / "torchtune.yaml")
    checkpointer = _call(
        fam.checkpointer,
        checkpoint_dir=str(base),
        checkpoint_files=["model.safetensors"],
        model_type=fam.model_type,
        output_dir=str(job / "torchtune_out"),
    )
    tune = tune_lora_model(base, section, checkpointer.load_checkpoint()["model"], converted=True)
    state = tune.state_dict()
    names = get_lora_module_names(
        section["lora_attn_modules"], section["apply_lora_to_mlp"], section.get("apply_lora_to_output", False)
    )
    ckpt = {
        "adapter": get_adapter_state_dict(state),
        "adapter_config": {
            "r": section["lora_rank"],
            "lora_alpha": section["lora_alpha"],
            "target_modules": names,
            "peft_type": "LORA",
        },
    }
    if kind == "full":
        ckpt["model"] = get_merged_lora_ckpt(
            {k: v.clone() for k, v in state.items()}, rank=section["lora_rank"], alpha=section["lora_alpha"]
        )
    checkpointer.save_checkpoint(ckpt, epoch=0, adapter_only=kind == "adapter")
    return export(kind, job / "torchtune_out" / "epoch_0", job, base).path


def test_full_checkpoint_equals_base_plus_the_exported_adapters_delta(family, tmp_path, monkeypatch, record_property):
    import gc

    from peft import PeftModel
    from safetensors.torch import load_file

    name, base = family
    monkeypatch.setattr(gc, "collect", lambda *args: 0)  # torchtune's checkpointer collects per file: ~1.3 s here
    section = lora_section(base)
    adapter = torchtune_epoch(base, tmp_path / "a", section, "adapter")
    full = torchtune_epoch(base, tmp_path / "f", section, "full")
    merged = PeftModel.from_pretrained(hf_model(base), adapter).merge_and_unload().state_dict()
    written = {}
    for f in full.glob("*.safetensors"):
        written.update(load_file(f))
    base_weights = saved_weights(base)
    assert set(written) == set(base_weights)  # same tensors as the base (a tied lm_head is not saved)
    changed = [k for k in written if not torch.equal(written[k], base_weights[k])]
    record_property("full_vs_base_plus_delta", max(max_diff(written[k], merged[k]) for k in written))
    assert changed and all(max_diff(written[k], merged[k]) < 1e-6 for k in written), name
    assert all(torch.equal(written[k], base_weights[k]) for k in written if "norm" in k or "embed" in k)


# -- each family's own traps ---------------------------------------------------------------------


def test_qwen3_needs_its_q_k_norms_before_rope_as_kits_builder_applies_them(kit_cache):
    """torchtune's MultiHeadAttention applies q_norm/k_norm after RoPE; HF's Qwen3 before it. With norm
    weights off their init the two differ; kit's builder computes HF's logits."""
    from torchtune.modules import MultiHeadAttention

    from kit.core.model.tiny import tiny_family_dir

    base = tiny_family_dir("qwen3")
    fam, c = family_of(base), read_config(base)
    weights = with_uneven_norms(saved_weights(base))
    hf = hf_model(base)
    hf.load_state_dict(weights, strict=False)
    component, shape = fam.base_builder(c)
    assert (
        component == "kit.core.model.torchtune_builders.qwen3"
        and shape["head_dim"] != c["hidden_size"] // c["num_attention_heads"]
    )
    tune = _call(component, **shape).eval()
    tune.load_state_dict(fam.hf_to_tune(weights, c), strict=True)
    with torch.no_grad():
        expected, kits = hf(ids(base)).logits, tune(ids(base))
        for layer in tune.layers:  # torchtune's own order: norm after RoPE
            layer.attn.forward = MultiHeadAttention.forward.__get__(layer.attn)
        torchtunes = tune(ids(base))
    assert max_diff(expected, kits) < TOL
    assert max_diff(expected, torchtunes) > 1e-2


def test_gemma2_torchtune_defects_kit_fixes(kit_cache):
    """torchtune 0.6.1's Gemma 2 caps the normed hidden state (HF caps the logits) and maps HF's
    pre_feedforward_layernorm to the norm applied after the MLP (and post_ to before): each alone
    changes the logits; kit's builder and key table give HF's."""
    from torchtune.models.gemma2._component_builders import gemma2 as torchtune_gemma2

    from kit.core.model.tiny import tiny_family_dir

    base = tiny_family_dir("gemma2")
    fam, c = family_of(base), read_config(base)
    weights = with_uneven_norms(saved_weights(base))
    hf = hf_model(base)
    hf.load_state_dict(weights, strict=False)
    component, shape = fam.base_builder(c)
    kits = _call(component, **shape).eval()
    kits.load_state_dict(fam.hf_to_tune(weights, c), strict=True)
    capped_hidden = torchtune_gemma2(**{k: v for k, v in shape.items() if k != "gelu_approximate"}).eval()
    capped_hidden.load_state_dict(fam.hf_to_tune(weights, c), strict=True)
    swap = {"pre_feedforward": "post_feedforward", "post_feedforward": "pre_feedforward"}
    swapped = {next((k.replace(a, b) for a, b in swap.items() if a in k), k): v for k, v in weights.items()}
    norms_swapped = _call(component, **shape).eval()
    norms_swapped.load_state_dict(fam.hf_to_tune(swapped, c), strict=True)  # = torchtune's own key table
    with torch.no_grad():
        expected = hf(ids(base)).logits
        assert max_diff(expected, kits(ids(base))) < TOL
        assert max_diff(expected, capped_hidden(ids(base))) > 1e-2
        assert max_diff(expected, norms_swapped(ids(base))) > 1e-2
    assert fam.load_args() == {"attn_implementation": "eager"}  # HF's sdpa path leaves the attention capping out


@pytest.mark.parametrize("name", ["phi3", "phi4"])
@pytest.mark.parametrize(
    "attn,mlp", [(["q_proj", "v_proj"], False), (["k_proj"], True), (["q_proj", "k_proj", "v_proj", "output_proj"], True)]
)
def test_phi_lora_on_separate_projections_is_one_exact_lora_on_hfs_fused_ones(
    name, attn, mlp, kit_cache, tmp_path, record_property
):
    """torchtune's LoRA on q, k, v (gate, up) == PEFT's on qkv_proj (gate_up_proj) with rank n*r,
    A stacked, B block-diagonal; rank_pattern/alpha_pattern keep PEFT's scaling at alpha / r, which
    is also what a reader of r and lora_alpha alone (vLLM) applies."""
    from torchtune.modules.peft import get_adapter_params

    from kit.core.model.tiny import tiny_family_dir
    from kit.eval.vllm_lora import served_rank

    base = tiny_family_dir(name)
    fam, c = family_of(base), read_config(base)
    section = lora_section(base, lora_attn_modules=attn, apply_lora_to_mlp=mlp, apply_lora_to_output=False)
    tune = tune_lora_model(base, section, saved_weights(base))
    adapter = {k: v.detach().clone() for k, v in get_adapter_params(tune).items()}
    config = fam.peft_config(section, base)
    tensors = fam.tune_to_peft_adapter(adapter, c)
    fused = sum(p in attn for p in ("q_proj", "k_proj", "v_proj"))
    assert config["rank_pattern"].get("qkv_proj", 4) == 4 * fused
    assert all(config["alpha_pattern"][m] / config["rank_pattern"][m] == 8.0 / 4 for m in config["rank_pattern"])
    assert served_rank(config) == max(4, 4 * fused, 8 if mlp else 0)
    qkv = next(v for k, v in tensors.items() if "layers.0.self_attn.qkv_proj.lora_B" in k)
    assert qkv.shape == (
        c["hidden_size"] + 2 * c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"],
        4 * fused,
    )
    peft = peft_from(base, tensors, config, tmp_path)
    with torch.no_grad():
        diff = max_diff(peft(ids(base)).logits, tune(ids(base)))
    record_property("fused_peft_vs_torchtune_logits", diff)
    assert diff < TOL


# -- one prompt format for training and every eval path ------------------------------------------


@pytest.mark.parametrize("name", ["mistral", "gemma", "llama2", "phi4"])
def test_trained_prompt_tokens_equal_the_prompt_tokens_every_eval_path_feeds(name, kit_cache):
    """Mistral's tiny model has no chat template (as Mistral-7B-v0.3 base): kit's plain format. The
    prompt tokens torchtune's dataset pipeline trains on (the tokenizer section of kit's torchtune.yaml)
    == what Inspect's hf provider feeds with the folder's own tokenizer (merge, full: its no-template
    fallback for Mistral) == what it feeds with kit's tokenizer (direct, merge_in_memory, verify, serve)."""
    from inspect_ai.model import ChatMessageUser
    from omegaconf import OmegaConf
    from torchtune import config as tune_config

    from kit.core.data import bundled, read_jsonl
    from kit.core.model import prompt_format
    from kit.core.model.loader import load_tokenizer
    from kit.core.model.tiny import tiny_family_dir
    from kit.eval.inspect_runner import hf_model as inspect_hf_model

    base = tiny_family_dir(name)
    section = family_of(base).tokenizer_section(base, None)
    assert section["_component_"] == "kit.core.model.hf_chat_tokenizer.hf_chat_tokenizer"
    assert (prompt_format.folder_template(base) is None) == (name == "mistral")
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
    api = inspect_hf_model(
        base, name, OmegaConf.create({"device": "cpu", "dtype": "fp32", "batch_size": 1, "temperature": 0.0})
    ).api
    own, kits = api.tokenizer, load_tokenizer(base)
    for i in (0, 1, 500):
        fed = []
        for tok in (own, kits):
            api.tokenizer = tok
            chat = api.hf_chat([ChatMessageUser(content=rows[i]["question"])], [])
            fed.append(tok(chat, **api.tokenizer_call_args)["input_ids"])
        assert fed[0] == fed[1]
        tokens, labels = dataset[i]["tokens"], dataset[i]["labels"]
        assert tokens[: len(fed[0])] == fed[0] and all(label == -100 for label in labels[: len(fed[0])])
        answer = tokenizer.decode([t for t, label in zip(tokens, labels) if label != -100], skip_special_tokens=False)
        assert answer.strip().startswith(rows[i]["answer"]) and tokenizer.hf.eos_token in answer
    if name == "mistral":
        assert chat == f"user: {rows[500]['question']}\n"  # Inspect's fallback, character for character
    record = prompt_format.record(base, section["_component_"])
    assert record["format"].startswith("kit plain" if name == "mistral" else "the model folder's chat template")


def test_the_default_tiny_qwen2_keeps_torchtunes_tokenizer_and_the_plain_format_is_only_for_no_template(tiny_base, tmp_path):
    from kit.core.model.prompt_format import PLAIN_TEMPLATE, attach

    section = family_of(tiny_base).tokenizer_section(tiny_base, None)
    assert section["_component_"] == "torchtune.models.qwen2.qwen2_tokenizer"  # the default job does not change
    no_template = tmp_path / "base"
    shutil.copytree(tiny_base, no_template)
    (no_template / "chat_template.jinja").unlink()
    assert family_of(no_template).tokenizer_section(no_template, None)["_component_"].endswith("hf_chat_tokenizer")

    class Tok:
        chat_template = "{{ x }}"

    assert attach(Tok()).chat_template == "{{ x }}"
    Tok.chat_template = None
    assert attach(Tok()).chat_template == PLAIN_TEMPLATE


# -- describe: from config.json alone ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_describe_says_what_each_family_is_from_config_json_alone(name, kit_cache, tmp_path):
    from kit.commands.describe import describe_folder
    from kit.core.model.tiny import tiny_family_dir

    source = tiny_family_dir(name)
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy2(source / "config.json", folder / "config.json")  # no weights, no tokenizer
    info = describe_folder(folder)
    c, fam = read_config(source), FAMILIES[name]
    model = hf_model(source)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert (info["layers"], info["heads"], info["kv_heads"]) == (
        c["num_hidden_layers"],
        c["num_attention_heads"],
        c["num_key_value_heads"],
    )
    assert info["head_dim"] == model.model.layers[0].self_attn.head_dim
    assert info["tied_embeddings"] == fam.tied(c) == (model.get_output_embeddings().weight is model.get_input_embeddings().weight)
    assert info["torchtune"]["family"] == name
    targets = info["lora_targets"]
    assert ("lm_head" in targets) == (not fam.tied(c))
    fused = name in ("phi3", "phi4")
    assert (
        {"qkv_proj", "gate_up_proj"} <= set(targets)
        if fused
        else {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"} <= set(targets)
    )
