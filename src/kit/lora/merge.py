"""Merge an adapter into its base and save the standalone model (PEFT merge_and_unload)."""

from __future__ import annotations

from pathlib import Path

from kit.core.device import resolve_device, resolve_dtype
from kit.core.model.loader import load_model, load_tokenizer
from kit.core.model.qlora import check_merge_target
from kit.lora.probes import changed_by, logits, probe_ids
from kit.lora.resident import check_fits, read_adapter


def merged_model(
    base: Path, adapter: Path, device: str = "cpu", dtype: str = "fp32", trust_remote_code: bool = False
) -> tuple[object, object, float]:
    """(merged model, tokenizer, largest logit change on the probes): ``base`` loaded on ``device``
    in ``dtype``, ``adapter`` merged into it there (PEFT ``merge_and_unload``), nothing cast
    afterwards. This is the model ``eval=merge`` saves and loads again (safetensors round-trips
    it bit for bit, and the non-persistent buffers such as rotary ``inv_freq`` are rebuilt as
    the load builds them), and the one ``kit verify`` checks as that path. A KitError when the
    adapter changes nothing, before or after the merge."""
    from peft import PeftModel

    _, shapes = read_adapter(adapter)  # one-line errors naming the bad file, before any work
    check_merge_target(adapter, base)  # trained on a compressed base: merged into that base only
    device = resolve_device(device)
    model = load_model(base, dtype=resolve_dtype(dtype, device), device=device, trust_remote_code=trust_remote_code)
    check_fits(shapes, model, adapter / "adapter_model.safetensors")
    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    ids, device = probe_ids(tokenizer), next(model.parameters()).device
    before = logits(model, ids, device)
    model = PeftModel.from_pretrained(model, adapter)
    change = changed_by(adapter, before, logits(model, ids, device), "merge")
    model = model.merge_and_unload()
    changed_by(adapter, before, logits(model, ids, device), "merge (merged weights)")
    return model, tokenizer, change


def merge_to_folder(
    base: Path, adapter: Path, out: Path, device: str = "cpu", dtype: str = "fp32", trust_remote_code: bool = False
) -> float:
    """Merge ``adapter`` into ``base`` on ``device`` in ``dtype`` and save the merged model to
    ``out`` in that dtype (``auto``: cuda / bf16 when there is a GPU); the defaults are
    ``phase.merge``'s standalone fp32 model, eval passes its own. Returns the largest logit
    change the adapter makes on the probes (a KitError when it changes nothing)."""
    model, tokenizer, change = merged_model(base, adapter, device, dtype, trust_remote_code)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return change
