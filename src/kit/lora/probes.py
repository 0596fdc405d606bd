"""Does an adapter change the model? Logits on a few fixed probes with and without it."""

from __future__ import annotations

from pathlib import Path

from kit.core.errors import KitError

PROBES = ["Is 12 even or odd?", "Hello, who are you?", "Reverse the word kit."]


def probe_ids(tokenizer) -> list[list[int]]:
    if tokenizer.chat_template:
        return [
            list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True))
            for p in PROBES
        ]
    return [tokenizer(p)["input_ids"] for p in PROBES]


def logits(model, ids: list[list[int]], device) -> list:
    import torch

    with torch.inference_mode():
        return [model(input_ids=torch.tensor([i], device=device)).logits[0].float().cpu() for i in ids]


def changed_by(adapter: Path, base_logits: list, adapter_logits: list, path: str) -> float:
    """Largest logit change the adapter makes on the probes; a KitError when it is zero."""
    diff = max(float((a - b).abs().max()) for a, b in zip(adapter_logits, base_logits))
    if diff == 0.0:
        raise KitError(
            f"adapter {str(adapter)!r} changes nothing on the {path} path (max |logit diff| 0 on "
            f"{len(base_logits)} probes): its score would be the base's; expected a trained adapter "
            "that PEFT applies"
        )
    return diff


def probe_resident(resident, name: str, adapter: Path, merged: bool) -> float:
    """direct / merge_in_memory: the resident base with and without the attached adapter."""
    device = next(resident.model.parameters()).device
    ids = probe_ids(resident.tokenizer)
    with resident.lock:
        resident.activate(name, merged=merged)
        try:
            with_adapter = logits(resident.forward_model(name), ids, device)
        finally:
            resident.restore()
        with resident.peft.disable_adapter():
            without = logits(resident.peft, ids, device)
    return changed_by(adapter, without, with_adapter, "merge_in_memory" if merged else "direct")
