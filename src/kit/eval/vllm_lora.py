"""What vLLM serves as LoRA, from kit's own table (vLLM itself need not be installed).

vLLM applies LoRA to the linear layers inside the decoder blocks. Its model classes
for the families kit trains (Qwen2/Qwen2.5 among them) declare no LoRA support for
the output projection (``lm_head``) or the embeddings, and vLLM refuses such an
adapter when it loads it, after training has been paid for. kit's default LoRA
trains the output projection (``lora.apply_to_output=true``), so preflight checks
this before training and the vllm strategy before it starts a server.
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


def unservable_from_config(lora_cfg) -> list[str]:
    """Modules kit's ``lora`` config would train that vLLM does not serve (before training)."""
    return ["lm_head"] if bool(lora_cfg.apply_to_output) else []


def refusal(module: str, family: str | None = None) -> str:
    what = UNSERVABLE.get(module.rsplit(".", 1)[-1], "this module")
    on = f" for {family} models" if family else ""
    return f"eval=vllm cannot serve this adapter: vLLM refuses LoRA on {module!r} ({what}){on}; {FIX}"
