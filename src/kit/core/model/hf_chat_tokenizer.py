"""A torchtune model tokenizer that formats training examples with the model's own
HF chat template.

torchtune 0.6.1 has ``HuggingFaceBaseTokenizer`` (encode/decode from tokenizer.json)
but no model tokenizer that applies a Hugging Face chat template, so a model whose
prompt format torchtune does not ship (SmolLM2: ChatML plus a default system prompt
the template inserts) would be trained on other tokens than it is evaluated on.

This one renders the conversation with the folder's chat template (or, for a base model without
one, kit's plain format: kit.core.model.prompt_format) through
``transformers`` and tokenizes it the way Inspect's ``hf`` provider does at eval
time: the prompt (every message before an assistant turn, plus the generation
prompt) is rendered with ``add_generation_prompt=True`` and tokenized as one string
with the tokenizer's own special tokens, so the tokens torchtune trains on for a
prompt are the tokens the eval path feeds. Each later part of the conversation is
the text the template adds for it, tokenized without special tokens and masked by
its message's ``masked`` flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kit.core.errors import KitError


class HFChatTokenizer:
    """torchtune ``ModelTokenizer`` + ``Transform`` over a local HF tokenizer folder."""

    def __init__(self, path: str, max_seq_len: int | None = None):
        from transformers import AutoTokenizer

        from kit.core.model.prompt_format import attach

        # a base model without a chat template gets kit's plain format, as every eval path does
        self.hf = attach(AutoTokenizer.from_pretrained(path, local_files_only=True))
        if self.hf.eos_token_id is None:
            raise KitError(f"tokenizer in {path!r} has no EOS token; expected eos_token in tokenizer_config.json")
        self.max_seq_len = max_seq_len
        self.bos_id = self.hf.bos_token_id
        self.eos_id = self.hf.eos_token_id
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id
        self.vocab_size = len(self.hf)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        ids = list(self.hf(text, add_special_tokens=False)["input_ids"])
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return [*ids, self.eos_id] if add_eos and self.eos_id is not None else ids

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The eval path's tokens for a prompt: Inspect's hf provider renders with
        ``add_generation_prompt=True`` and calls the tokenizer on the string."""
        return list(self.hf(self.render(messages, True))["input_ids"])

    def tokenize_messages(self, messages: list, add_end_tokens: bool = True) -> tuple[list[int], list[bool]]:
        """Tokens and mask (True = not trained on) of a torchtune ``Message`` list.
        ``add_end_tokens=False`` (inference): a final assistant message is left out and the
        tokens end with the generation prompt, as at eval time."""
        answer_next = not add_end_tokens and bool(messages) and messages[-1].role == "assistant"
        if answer_next:
            messages = messages[:-1]
        chat = [{"role": m.role, "content": m.text_content} for m in messages]
        tokens: list[int] = []
        mask: list[bool] = []
        done = ""  # the text rendered so far; each step must extend it
        for i, message in enumerate(messages):
            last = i + 1 == len(messages)
            prompt_next = answer_next if last else messages[i + 1].role == "assistant"
            text = self.render(chat[: i + 1], add_generation_prompt=prompt_next)
            if not text.startswith(done):
                raise KitError(
                    "the chat template is not prefix-stable (rendering more messages changes the "
                    "text of earlier ones); kit cannot mask prompt tokens for it"
                )
            # the first part is tokenized exactly as at eval time (with the tokenizer's special tokens)
            part = self.hf(text) if i == 0 else self.hf(text[len(done) :], add_special_tokens=False)
            ids = part["input_ids"]
            tokens += ids
            mask += [bool(message.masked)] * len(ids)
            done = text
        if self.max_seq_len is not None:
            tokens, mask = tokens[: self.max_seq_len], mask[: self.max_seq_len]
        return tokens, mask

    def __call__(self, sample: Mapping[str, Any], inference: bool = False) -> Mapping[str, Any]:
        sample = dict(sample)
        tokens, mask = self.tokenize_messages(sample.pop("messages"), add_end_tokens=not inference)
        sample["tokens"], sample["mask"] = tokens, mask
        return sample


def hf_chat_tokenizer(path: str, max_seq_len: int | None = None) -> HFChatTokenizer:
    """torchtune config entry point (``tokenizer._component_``)."""
    return HFChatTokenizer(path, max_seq_len)
