"""What every check gets: the checkpoint, the probe set and the evaluation paths.

Paths (all on the same probes, in the verify dtype):
``peft_merge``      PEFT ``merge_and_unload`` of a base loaded in fp32, cast to the dtype
                    (what ``eval=merge`` saves to its temporary folder and loads again;
                    safetensors save/load is bit-exact, so it is done in memory). The reference.
``full``            the exported full model (``checkpointer=full`` jobs only).
``merge_in_memory`` the adapter merged into the resident base, restored bit-exactly after.
``direct``          the resident base with the unmerged adapter (``eval=direct``).
The resident base is kit.lora.resident's, shared with the Inspect strategies.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kit.core.data import read_jsonl
from kit.core.device import torch_dtype
from kit.core.model.loader import load_model
from kit.eval.session import current
from kit.lora.resident import ResidentBase
from kit.verify.tolerance import Tolerance


@dataclass
class VerifyContext:
    cfg: object  # the job's composed config (``cfg.verify`` is this command's settings)
    job_dir: Path
    base: Path
    adapter: Path  # a PEFT adapter folder (the job's, or built from its torchtune adapter)
    full: Path | None  # the exported full model, when the job has one
    tune_adapter: Path | None  # the training run's own adapter (kit/verify/reference.py)
    section: dict | None  # torchtune.yaml's model section
    device: str
    dtype: str  # fp32 | bf16 | fp16
    tol: Tolerance
    peers: list[Path] = field(default_factory=list)  # every adapter of this verify call
    _models: dict = field(default_factory=dict)
    _logits: dict = field(default_factory=dict)

    @property
    def torch_dtype(self):

        return torch_dtype(self.dtype)

    @property
    def resident(self):
        """The running session's resident base (shared with eval), else this context's own."""
        trust = bool(self.cfg.model.trust_remote_code)
        session = current()
        if session is not None:
            return session.resident(self.base, self.device, self.dtype, trust)
        if "resident" not in self._models:
            self._models["resident"] = ResidentBase(self.base, self.device, self.dtype, trust)
        return self._models["resident"]

    @property
    def tokenizer(self):
        return self.resident.tokenizer

    def path_names(self) -> list[str]:
        return ["peft_merge", *(["full"] if self.full else []), "merge_in_memory", "direct"]

    @contextmanager
    def path(self, name: str):
        """The model that computes along one path (restored when the block ends)."""
        if name in ("peft_merge", "full"):
            yield self._loaded(name)
            return
        resident = self.resident
        with resident.lock:
            adapter = resident.attach(self.adapter)
            resident.activate(adapter, merged=name == "merge_in_memory")
            try:
                yield resident.forward_model(adapter)
            finally:
                resident.restore()

    def _loaded(self, name: str):
        if name not in self._models:
            if name == "full":
                model = load_model(self.full, dtype=self.dtype, device=self.device)
            else:
                from peft import PeftModel

                base = load_model(self.base, dtype="float32", device=self.device)
                model = PeftModel.from_pretrained(base, self.adapter).merge_and_unload().to(self.torch_dtype)
            self._models[name] = model
        return self._models[name]

    # -- probes --------------------------------------------------------------

    def rows(self) -> list[tuple[str, str]]:

        d = self.cfg.dataset
        rows = read_jsonl(d.train_file, (d.prompt_column, d.response_column))[: int(self.cfg.verify.probes)]
        return [(r[d.prompt_column], r[d.response_column]) for r in rows]

    def _ids(self, prompt: str, response: str | None) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            messages = [{"role": "user", "content": prompt}]
            if response is not None:
                messages.append({"role": "assistant", "content": response})
            return list(tok.apply_chat_template(messages, add_generation_prompt=response is None, tokenize=True))
        return tok(prompt if response is None else f"{prompt} {response}")["input_ids"]

    def probes(self) -> list[list[int]]:
        """Prompt + response token ids: logits are compared at every position."""
        return [self._ids(p, r) for p, r in self.rows()]

    def prompts(self) -> list[list[int]]:
        """Prompt ids ending in the generation prompt: what generation starts from."""
        return [self._ids(p, None) for p, _ in self.rows()]

    def logits(self, name: str) -> list:
        """Logits of each probe (batch 1, no padding) along one path; cached."""
        if name not in self._logits:
            import torch

            with self.path(name) as model, torch.inference_mode():
                self._logits[name] = [
                    model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float().cpu() for ids in self.probes()
                ]
        return self._logits[name]

    def close(self) -> None:
        self._models.clear()
        self._logits.clear()
