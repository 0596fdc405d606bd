"""What vLLM serves as LoRA, from kit's own table (vLLM itself need not be installed).

vLLM applies LoRA to the linear layers inside the decoder blocks. Its model classes
for the families kit trains (Qwen2/Qwen2.5, Qwen3, Llama 2/3, Mistral, Gemma, Gemma 2,
Phi-3/Phi-4) declare no LoRA support for the output projection (``lm_head``) or the
embeddings, and vLLM refuses such an adapter when it loads it, after training has been
paid for. kit's default LoRA trains the output projection (``lora.apply_to_output=true``),
so preflight checks this before training and the vllm strategy before it starts a server.
(Gemma's and Gemma 2's output layer is always the embedding matrix: kit refuses LoRA on it
for those families before vLLM is asked.)

Phi-3/Phi-4 adapters target HF's fused ``qkv_proj`` and ``gate_up_proj`` with a larger rank
(``rank_pattern``: 3r and 2r, kit.core.model.families.phi3). vLLM takes such a module as one
LoRA slice (its Phi-3 class maps ``qkv_proj`` to ``[qkv_proj]``; versions before mid-2024 refused
it), reads the rank from the tensors and only ``r`` and ``lora_alpha`` from the config (so it scales
by alpha/r, which the patterns keep equal), and needs ``--max-lora-rank`` at least the largest
tensor rank: ``served_rank``. Read from vLLM's source; not run here (no vLLM on this machine).
"""

from __future__ import annotations

import importlib.util

# last name component of modules vLLM does not serve LoRA on (HF names, torchtune's `output`)
UNSERVABLE = {
    "lm_head": "the output projection",
    "embed_tokens": "the token embeddings",
    "output": "the output projection",
    "tok_embeddings": "the token embeddings",
    "wte": "the token embeddings",
    "embed_out": "the output projection",
}
FIX = "set lora.apply_to_output=false (or use eval=direct or eval=merge_in_memory)"


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def unservable_modules(target_modules) -> list[str]:
    """The adapter's target modules vLLM would refuse (PEFT's ``target_modules``: a list or a regex string)."""
    if isinstance(target_modules, str):  # a regex: look for the refused names in it
        return [name for name in UNSERVABLE if name in target_modules]
    return [m for m in target_modules or [] if str(m).rsplit(".", 1)[-1] in UNSERVABLE]


def served_rank(adapter_config: dict) -> int:
    """The rank vLLM must be started with for this adapter: ``r``, or a larger ``rank_pattern`` rank."""
    return max([int(adapter_config["r"]), *(int(v) for v in (adapter_config.get("rank_pattern") or {}).values())])


def unservable_from_config(lora_cfg) -> list[str]:
    """Modules kit's ``lora`` config would train that vLLM does not serve (before training)."""
    return ["lm_head"] if bool(lora_cfg.apply_to_output) else []


def refusal(module: str, family: str | None = None) -> str:
    what = UNSERVABLE.get(module.rsplit(".", 1)[-1], "this module")
    on = f" for {family} models" if family else ""
    return f"eval=vllm cannot serve this adapter: vLLM refuses LoRA on {module!r} ({what}){on}; {FIX}"
