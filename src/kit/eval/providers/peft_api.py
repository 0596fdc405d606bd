"""``peft/<adapter folder>``: a base model plus an unmerged PEFT adapter, for Inspect.

    inspect eval task.py --model peft/outputs/run/adapter -M base=/models/Qwen2.5-0.5B
    eval(tasks, model=get_model("peft/<adapter>", base="<base>"))

Model args: ``base`` (required), ``device``, ``dtype`` (fp32|bf16|fp16),
``merge`` (merge into the resident weights while this model generates, then
restore them bit-exactly), ``max_adapters``, ``check_restore``, ``batch_size``, and
the ``hf`` provider's ``do_sample``, ``chat_template``, ``use_chat_template``,
``tokenizer_call_args``, ``enable_thinking``, ``trust_remote_code``.
``peft/base`` evaluates the bare base through the same resident copy.

``batch_size`` is the provider's own: how many queued requests one ``generate``
call takes. Inspect's ``max_connections`` stays what it is elsewhere, the number
of samples in flight (the ``hf`` provider uses it as the batch size too; a batch
can only fill when max_connections >= batch_size).

The base is loaded once per session (kit.eval.session: the running command's,
found through a context variable) and shared by every task and every adapter; a
second provider instance (Inspect's model-info lookup can make one) reuses it.
With no session running (Inspect's own CLI) the provider opens its own and closes
it with itself. Prompt building, batching and decoding are the ``hf`` provider's
own code, so an adapter scores exactly as its merged model does there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspect_ai.model import GenerateConfig, ModelAPI
from inspect_ai.model._providers.hf import HuggingFaceAPI, set_random_seeds

from kit.core.device import resolve_device, resolve_dtype
from kit.core.errors import KitError
from kit.eval.session import EvalSession, current

HF_ARGS = ("batch_size", "chat_template", "use_chat_template", "tokenizer_call_args", "enable_thinking", "hidden_states")


class AdapterView:
    """What the ``hf`` provider calls ``self.model``: the resident base with one adapter active.

    ``generate`` runs on Inspect's batch thread; it takes the resident lock and
    switches adapter first, so requests for different adapters never mix in a batch
    (Inspect batches by the identity of this object's ``generate``). It runs kit's decode
    loop over the fused LoRA path when that reproduces the call (greedy or plain sampling;
    a CUDA-graph decode step on a GPU), else HF ``generate`` (``ResidentBase.generate``).
    """

    def __init__(self, resident, adapter: str | None, merged: bool, check_restore: bool):
        self.resident, self.adapter, self.merged, self.check_restore = resident, adapter, merged, check_restore

    @property
    def device(self):
        return self.resident.model.device

    def generate(self, *args, **kwargs):
        if args:  # positional input_ids, as HF generate takes them
            kwargs["input_ids"] = args[0]
        return self.resident.generate(self.adapter, self.merged, self.check_restore, **kwargs)


class PeftAPI(HuggingFaceAPI):
    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ):
        ModelAPI.__init__(self, model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        if config.seed is not None:
            set_random_seeds(config.seed)
        base = model_args.pop("base", None)
        if not base:
            raise KitError(f"model peft/{model_name} needs -M base=<base model folder>")
        for name in HF_ARGS:
            setattr(self, name, model_args.pop(name, None))
        self.tokenizer_call_args = self.tokenizer_call_args or {}
        do_sample = model_args.pop("do_sample", None)
        self.do_sample = True if do_sample is None else bool(do_sample)

        self.device = resolve_device(model_args.pop("device", None) or "auto")
        dtype = resolve_dtype(model_args.pop("dtype", None) or "auto", self.device)
        merged = bool(model_args.pop("merge", False))
        check_restore = bool(model_args.pop("check_restore", True))
        session = current()
        self.own_session = None if session is not None else EvalSession()  # closed with this provider
        resident = (session or self.own_session).resident(
            Path(base),
            self.device,
            dtype,
            bool(model_args.pop("trust_remote_code", False)),
            int(model_args.pop("max_adapters", 4)),
        )
        if model_args:
            raise KitError(
                f"model peft/{model_name}: unknown model args {sorted(model_args)}; expected base, device, dtype, merge, ..."
            )
        adapter = None if model_name == "base" else resident.attach(Path(model_name))
        self.model = AdapterView(resident, adapter, merged, check_restore)
        self.tokenizer = resident.tokenizer
        self.tokenizer.pad_token = self.tokenizer.eos_token  # as the hf provider does
        self.tokenizer.padding_side = "left"

    async def generate(self, input, tools, tool_choice, config: GenerateConfig):
        """The ``hf`` provider's generate, batching by ``batch_size`` (when given), not max_connections."""
        if self.batch_size:
            config = config.model_copy(update={"max_connections": int(self.batch_size)})
        return await super().generate(input, tools, tool_choice, config)

    def close(self) -> None:
        """Keep the resident base (the next adapter reuses it); undo an in-memory merge."""
        view = self.model
        if isinstance(view, AdapterView) and view.merged:
            with view.resident.lock:
                view.resident.restore(view.check_restore)
        if getattr(self, "own_session", None) is not None:
            self.own_session.close()
            self.own_session = None
