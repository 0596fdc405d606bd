"""Generation on the resident base with per-request modifiers.

Every request becomes a ``Job`` on one queue, served by one worker thread, so
the model is only ever touched by that thread and nothing is reloaded between
requests for different modifiers:

``switch``  one job at a time: activate its modifier (PEFT ``set_adapter``), generate.
``mixed``   jobs that arrive within ``batch_wait_ms`` of each other run as ONE batch,
            each row with its own modifier (PEFT ``generate(adapter_names=[...])``;
            ``__base__`` rows use the bare base). Greedy jobs only; a sampled job
            runs on its own so its seed means what it says.

``bench/serve.py`` measures which is faster.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Job:
    prompt: str
    modifier: str | None  # a registry name, None for the base
    settings: dict  # max_new_tokens, temperature, top_p, seed
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None  # (text, prompt_tokens, completion_tokens, finish_reason)
    error: BaseException | None = None

    @property
    def greedy(self) -> bool:
        return self.settings["temperature"] == 0


class Engine:
    def __init__(self, store, batching: str = "mixed", batch_wait_ms: int = 5, max_batch: int = 16):
        self.store = store  # kit.stages.serve.store.ModifierStore
        self.resident = store.resident
        self.batching = batching
        self.wait = batch_wait_ms / 1000
        self.max_batch = max_batch
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.batches = 0  # generate calls, for stats and tests
        self.rows = 0
        threading.Thread(target=self._work, name="kit-serve-engine", daemon=True).start()

    def generate(self, prompt: str, modifier: str | None, settings: dict, timeout: float | None = None) -> tuple:
        job = Job(prompt, modifier, settings)
        self.jobs.put(job)
        if not job.done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if job.error is not None:
            raise job.error
        return job.result

    # -- worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except BaseException as e:  # the request fails; the server goes on
                for job in batch:
                    job.error = e
            finally:
                for job in batch:
                    job.done.set()

    def _next_batch(self) -> list[Job]:
        first = self.jobs.get()
        if self.batching != "mixed" or not first.greedy:
            return [first]
        batch, deadline = [first], time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not job.greedy or not self._fits(batch, job):
                self.jobs.put(job)  # served in a later batch, in order among its kind
                break
            batch.append(job)
        return batch

    def _fits(self, batch: list[Job], job: Job) -> bool:
        """Same ``min_tokens``, and at most ``max_loaded`` distinct modifiers (all stay attached at once)."""
        names = {j.modifier for j in batch if j.modifier} | ({job.modifier} if job.modifier else set())
        same_floor = job.settings["min_new_tokens"] == batch[0].settings["min_new_tokens"]
        return same_floor and len(names) <= self.store.max_loaded

    def _run(self, batch: list[Job]) -> None:
        import torch

        tok = self.resident.tokenizer
        names = [self.store.adapter(j.modifier) if j.modifier else None for j in batch]
        encoded = tok([j.prompt for j in batch], return_tensors="pt", padding=True,
                      padding_side="left", add_special_tokens=False)
        longest = max(j.settings["max_new_tokens"] for j in batch)
        kwargs = {"max_new_tokens": longest, "pad_token_id": tok.pad_token_id or tok.eos_token_id,
                  "min_new_tokens": batch[0].settings["min_new_tokens"]}
        first = batch[0].settings
        if first["temperature"] > 0:
            kwargs.update(do_sample=True, temperature=first["temperature"], top_p=first["top_p"])
            torch.manual_seed(first["seed"])
        else:
            kwargs["do_sample"] = False
        with self.resident.lock, torch.inference_mode():
            out = self._generate(encoded, names, kwargs)
        self.batches += 1
        self.rows += len(batch)
        width = encoded["input_ids"].shape[1]
        for row, job in enumerate(batch):
            prompt_tokens = int(encoded["attention_mask"][row].sum())
            job.result = self._decode(out[row, width:width + job.settings["max_new_tokens"]], prompt_tokens)

    def _generate(self, encoded, names: list[str | None], kwargs: dict):
        if len(set(names)) == 1 or self.resident.peft is None:  # one modifier (or the base) for all rows
            self.resident.activate(names[0])
            return self.resident.forward_model(names[0]).generate(**encoded, **kwargs)
        self.resident.activate(None)  # unmerged, nothing forced: the rows choose
        return self.resident.peft.generate(**encoded, adapter_names=[n or BASE_ROW for n in names], **kwargs)

    def _decode(self, new, prompt_tokens: int) -> tuple:
        tok = self.resident.tokenizer
        ids = new.tolist()
        end = next((i for i, t in enumerate(ids) if t == tok.eos_token_id), None)  # pads come only after it
        finish = "stop" if end is not None else "length"
        ids = ids[:end] if end is not None else ids
        return tok.decode(ids, skip_special_tokens=True), prompt_tokens, len(ids) + (end is not None), finish
