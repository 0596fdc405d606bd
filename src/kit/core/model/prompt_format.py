"""The one prompt format a job trains on and is evaluated with.

A model folder with a chat template (``chat_template.jinja`` or ``tokenizer_config.json``'s
``chat_template``) is trained on what that template renders, and every eval path renders the
same template. A base model without one (Mistral-7B-v0.3, Llama-3.1-8B) gets kit's plain format,
``PLAIN_TEMPLATE``: each prompt message as ``<role>: <content>`` and a newline, nothing for the
generation prompt, the answer followed by the EOS token. The prompt part is, character for
character, what Inspect's ``hf`` provider renders for a tokenizer without a chat template
(``f"{role}: {content}\\n"`` per message), so a full or merged model that Inspect loads with its own
tokenizer reads the same prompt as kit's ``peft/`` provider, verify and ``kit serve``, whose
tokenizers carry the template (``attach``). Training (``kit.core.model.hf_chat_tokenizer``)
renders it too, so the trained-on prompt tokens are the evaluated ones (tests/test_families.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
)
PLAIN = "kit plain: '<role>: <content>\\n' per prompt message, no generation prompt, the answer then EOS"


def folder_template(base: Path) -> str | None:
    """The model folder's own chat template, or None."""
    jinja = base / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = base / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, list):  # named templates: the default one is the chat template
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return template or None
    return None


def attach(tokenizer):
    """A Hugging Face tokenizer with kit's plain format when it has no chat template of its own."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_TEMPLATE
    return tokenizer


def record(base: Path, tokenizer_component: str) -> dict:
    """What summary.json's ``train`` block says about the prompt format the job trained on."""
    own = folder_template(base)
    template = own if own is not None else PLAIN_TEMPLATE
    return {
        "format": "the model folder's chat template" if own is not None else PLAIN,
        "tokenizer": tokenizer_component,
        "template_sha256": hashlib.sha256(template.encode()).hexdigest()[:16],
    }
