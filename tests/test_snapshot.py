"""kit.core.model.snapshot: bit-exact restore of the modules an adapter touches, in memory and
chunked on disk, also into a PEFT-wrapped model after an in-memory merge."""

import pytest
import torch

from kit.core.errors import KitError
from kit.core.model.loader import load_model
from kit.core.model.snapshot import Snapshot, adapter_target_modules, fingerprint, param_names

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


@pytest.fixture
def model(tiny_base):
    return load_model(tiny_base)


def peft_wrapped(model, lora=LORA):
    """A real PEFT LoRA on the model, with non-zero B so merging changes weights."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(**lora))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft_model


def lora_wrapped_modules(peft_model) -> list[str]:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return [n[len(prefix) :] for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


def nudge(model, names):
    """Change each named weight by one ulp in one element: a restore must undo even that."""
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            flat = p.view(-1)
            flat[0] = torch.nextafter(flat[0], flat[0] + 1)


@pytest.mark.parametrize(
    "lora",
    [
        LORA,
        {"r": 2, "target_modules": r".*\.mlp\.(up|gate)_proj"},
        {"r": 2, "target_modules": "all-linear"},
        {"r": 2, "target_modules": ["q_proj", "k_proj"], "layers_to_transform": [1]},
    ],
)
def test_target_modules_are_the_ones_peft_wraps(tiny_base, lora):
    names = adapter_target_modules(load_model(tiny_base), lora)
    assert names and names == lora_wrapped_modules(peft_wrapped(load_model(tiny_base), lora))


@pytest.mark.parametrize("to_disk", [False, True])
def test_restore_is_bit_exact(model, tmp_path, to_disk):
    modules = adapter_target_modules(model, LORA)
    names = param_names(model, modules)
    before = fingerprint(model)
    snap = Snapshot.take(model, modules, to_disk=tmp_path / "snap" if to_disk else None, chunk_bytes=20_000)
    assert snap.nbytes == sum(model.get_parameter(n).nbytes for n in names)
    if to_disk:
        assert len(list((tmp_path / "snap").glob("*.safetensors"))) > 1  # really chunked
    nudge(model, names)
    assert fingerprint(model) != before
    snap.restore(model)
    assert fingerprint(model) == before
    snap.discard()
    assert not (tmp_path / "snap").exists()


def test_restore_after_in_memory_merge_into_the_wrapped_model(model):
    modules = adapter_target_modules(model, LORA)
    names = param_names(model, modules)
    before = fingerprint(model, names)
    snap = Snapshot.take(model, modules)
    peft_model = peft_wrapped(model)
    assert fingerprint(peft_model.base_model.model, names) == before  # names resolve through base_layer
    peft_model.merge_adapter()
    assert fingerprint(peft_model.base_model.model, names) != before
    snap.restore(peft_model.base_model.model)
    assert fingerprint(peft_model.base_model.model, names) == before


def test_fingerprint_sees_one_ulp_in_bf16(tiny_base):
    model = load_model(tiny_base, dtype="bfloat16")
    before = fingerprint(model)
    assert before == fingerprint(load_model(tiny_base, dtype="bfloat16"))
    nudge(model, ["lm_head.weight"])
    assert fingerprint(model) != before


def test_restore_into_another_dtype_refused(model, tiny_base, tmp_path):
    snap = Snapshot.take(model, ["model.layers.0.self_attn.q_proj"])
    other = load_model(tiny_base, dtype="bfloat16")
    with pytest.raises(KitError, match="expected the model the snapshot was taken from"):
        snap.restore(other)
    with pytest.raises(KitError, match="not found"):
        Snapshot.take(model, ["model.layers.9.self_attn.q_proj"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(KitError, match="not empty"):
        Snapshot.take(model, ["lm_head"], to_disk=tmp_path / "full")


def test_adapter_config_from_folder(model, tmp_path):
    import json

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **LORA}))
    assert adapter_target_modules(model, tmp_path) == adapter_target_modules(model, LORA)
