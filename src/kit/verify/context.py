"""What every check gets: the checkpoint, the probe set and the evaluation paths.

Paths (all on the same probes):
``reference``       PEFT ``merge_and_unload`` of the adapter on a base loaded in fp32, whatever
                    the verify dtype: what every eval path is compared with (kit/verify/tolerance.py)
                    and what the training run's own model must reproduce (adapter_folder).
``rounding``        bf16/fp16 only: the reference's weights rounded to the dtype, run in it; how
                    far this dtype's rounding alone moves this model (the yardstick of the limits).
``merge``           the model ``eval=merge`` evaluates, built by its own code
                    (kit.lora.merge.merged_model: base loaded in the dtype, merged there, nothing
                    cast after); in fp32 it is the reference.
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
from kit.lora.merge import merged_model
from kit.lora.resident import ResidentBase
from kit.verify.tolerance import Tolerance, rounding_yardstick

REFERENCE = "reference"


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
    _rounding: dict | None = None

    @property
    def torch_dtype(self):

        return torch_dtype(self.dtype)

    @property
    def fp32_tol(self) -> Tolerance:
        """The fp32 rule, for comparisons made in fp32 whatever the verify dtype."""
        t = self.tol
        return Tolerance("fp32", t.logit_ulps, t.logit_abs_floor, t.margin_ulps, t.rounding_factor)

    @property
    def trust(self) -> bool:
        return bool(self.cfg.model.trust_remote_code)

    @property
    def resident(self):
        """The running session's resident base (shared with eval), else this context's own."""
        session = current()
        if session is not None:
            return session.resident(self.base, self.device, self.dtype, self.trust)
        if "resident" not in self._models:
            self._models["resident"] = ResidentBase(self.base, self.device, self.dtype, self.trust)
        return self._models["resident"]

    @property
    def tokenizer(self):
        return self.resident.tokenizer

    def eval_paths(self) -> list[str]:
        """The paths an eval can take, compared with the reference by the logits check."""
        return [*([] if self.tol.strict else ["merge"]), *(["full"] if self.full else []), "merge_in_memory", "direct"]

    def path_names(self) -> list[str]:
        """Every path that generates, ``merge`` first (the generation check's reference)."""
        return ["merge", *(["full"] if self.full else []), "merge_in_memory", "direct"]

    @contextmanager
    def path(self, name: str):
        """The model that computes along one path (restored when the block ends)."""
        if name in ("merge", "full"):
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
                model = merged_model(self.base, self.adapter, self.device, self.dtype, self.trust)[0]
            self._models[name] = model.eval()
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

    def run(self, model) -> list:
        """Logits of each probe (batch 1, no padding) through ``model``."""
        import torch

        with torch.inference_mode():
            return [model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float().cpu() for ids in self.probes()]

    def logits(self, name: str) -> list:
        """Logits of each probe along one path; cached."""
        if name == REFERENCE and self.tol.strict:
            name = "merge"  # in fp32 the model eval=merge runs is the reference
        if name not in self._logits:
            if name in (REFERENCE, "rounding"):
                self._reference_and_rounding()
            else:
                with self.path(name) as model:
                    self._logits[name] = self.run(model)
        return self._logits[name]

    def _reference_and_rounding(self) -> None:
        """The fp32 reference's logits, then its own weights rounded to the dtype in place
        (buffers left as a load in the dtype leaves them) for the yardstick; the model is then
        freed, so at most one fp32 copy is held at a time."""
        import torch

        model = merged_model(self.base, self.adapter, self.device, "fp32", self.trust)[0].eval()
        self._logits[REFERENCE] = self.run(model)
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.to(self.torch_dtype)
        self._logits["rounding"] = self.run(model)
        del model

    def rounding(self) -> dict:
        """The yardstick of the bf16/fp16 limits (kit/verify/tolerance.py)."""
        if self._rounding is None:
            self._rounding = rounding_yardstick(self.logits(REFERENCE), self.logits("rounding"), self.tol)
        return self._rounding

    def close(self) -> None:
        self._models.clear()
        self._logits.clear()
