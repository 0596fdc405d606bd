"""Generation on the resident base with per-request modifiers.

Every request becomes a ``Job`` on one queue, served by one worker thread, so
the model is only ever touched by that thread and nothing is reloaded between
requests for different modifiers:

``switch``  one job at a time: activate its modifier (PEFT ``set_adapter``), generate.
``mixed``   jobs that arrive within ``batch_wait_ms`` of each other run as ONE batch,
            each row with its own modifier (PEFT ``generate(adapter_names=[...])``;
            ``__base__`` rows use the bare base). Greedy jobs only; a sampled job
            runs on its own so its seed means what it says.

Each row is watched after every generated token (``RowWatch``): it ends on its own
end-of-turn token, its own ``max_tokens``, a ``stop`` string, its deadline, or when
its client has gone (``Job.cancel``), and its answer is handed back at once rather
than when the longest row of the batch ends. A greedy row that has run
``preempt_tokens`` tokens in its batch while others wait is set aside and continues
(from its prompt and the tokens so far) at the back of the queue, so one long
answer does not hold everyone queued behind its batch. A batch that fails is re-run
row by row, so one bad request fails alone. Prompts arrive as token ids, already checked
against the model's context by the caller.

``bench/serve.py`` measures which batching is faster; ``bench/serve_load.py`` what
one misbehaving client costs the others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
FINISHING = threading.Lock()


class Cancelled(Exception):
    """The client went away (or the server is stopping): nobody reads this answer."""


class ServerStopping(Exception):
    """The server is stopping and its drain deadline has passed: this request is answered 503."""

    def __init__(self, seconds: float):
        super().__init__(f"the server is stopping (serve.drain_timeout_s={seconds:g} has passed); retry elsewhere or later")


class DeadlineExceeded(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"generation took longer than serve.request_timeout_s={seconds:g}")


@dataclass
class Job:
    prompt_ids: list[int]
    modifier: str | None  # a registry name, None for the base
    settings: dict  # max_new_tokens, min_new_tokens, temperature, top_p, seed, stop
    timeout: float = 300.0  # seconds from submission to the last token
    on_text: Callable[[str], None] | None = None  # streaming: new answer text, called from the worker
    on_done: Callable[[], None] | None = None  # called from the worker once result or error is set
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None  # (text, prompt_tokens, completion_tokens, finish_reason)
    error: BaseException | None = None
    cancelled: bool = False
    ids: list[int] = field(default_factory=list)  # generated so far
    sent: int = 0  # characters of answer text already given to on_text
    run_start: int = 0  # len(ids) when its current batch began
    paused: bool = False  # set aside for waiting requests; continues in a later batch

    @property
    def todo_max(self) -> int:
        return self.settings["max_new_tokens"] - len(self.ids)

    @property
    def todo_min(self) -> int:
        return max(0, self.settings["min_new_tokens"] - len(self.ids))

    def __post_init__(self):
        self.deadline = time.monotonic() + self.timeout

    @property
    def greedy(self) -> bool:
        return self.settings["temperature"] == 0

    def cancel(self) -> None:
        self.cancelled = True  # read by the worker between tokens

    def finish(self, result: tuple | None = None, error: BaseException | None = None) -> None:
        with FINISHING:  # the worker and a stopping server may finish the same job: the first one wins
            if self.done.is_set():
                return
            self.result, self.error = result, error
            self.done.set()
        if self.on_done is not None:
            self.on_done()


class Decoder:
    """Answer text from generated ids: the chat template's own assistant header dropped when the
    model writes it (a raw prompt without the generation prompt: the model opens the turn
    itself, and skipping special tokens would leave ``assistant\\n`` in the answer), and the end
    at a new turn or a stop string."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos = {tokenizer.eos_token_id} - {None}
        self.header = generation_header(tokenizer)
        self.turn_start = self.header[0] if self.header and self.header[0] in tokenizer.all_special_ids else None

    def answer_ids(self, ids: list[int]) -> tuple[list[int], bool]:
        """(the answer's ids, whether it may still grow into a header we would drop)."""
        h = self.header
        if h and ids[: len(h)] == h:
            ids = ids[len(h) :]
        elif h and len(ids) < len(h) and ids == h[: len(ids)]:
            return [], True
        return ids, False

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def generation_header(tokenizer) -> list[int]:
    """Token ids the chat template adds for ``add_generation_prompt`` (e.g. ``<|im_start|>assistant\\n``)."""
    try:
        turn = [{"role": "user", "content": "x"}]
        with_header = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        without = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=False)
    except Exception:  # no chat template: nothing to drop
        return []
    if not with_header.startswith(without) or with_header == without:
        return []
    return tokenizer(with_header[len(without) :], add_special_tokens=False)["input_ids"]


class RowWatch:
    """A transformers stopping criterion: one verdict per row, after every token."""

    def __init__(self, engine: Engine, batch: list[Job], width: int):
        self.engine, self.batch, self.width = engine, batch, width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(len(self.batch), dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, job in enumerate(self.batch):
            if job.done.is_set() or self.engine.step(job, last[row]):
                done[row] = True
        return done


class RowFloor:
    """A transformers logits processor: no end-of-turn for a row before its own ``min_tokens``
    (transformers' own floor is one number for the whole batch, so rows with different floors
    could not share a batch)."""

    def __init__(self, batch: list[Job], eos: set[int]):
        self.batch, self.eos = batch, sorted(eos)
        self.floors = [j.todo_min for j in batch]
        self.start = [len(j.ids) for j in batch]

    def __call__(self, input_ids, scores):
        for row, job in enumerate(self.batch):
            if self.floors[row] and len(job.ids) - self.start[row] < self.floors[row]:
                scores[row, self.eos] = float("-inf")
        return scores


class Engine:
    def __init__(self, store, batching: str = "mixed", batch_wait_ms: int = 5, max_batch: int = 16, preempt_tokens: int = 32):
        self.store = store  # kit.runtime.serve.store.ModifierStore
        self.resident = store.resident
        self.decoder = Decoder(self.resident.tokenizer)
        self.batching = batching
        self.wait = batch_wait_ms / 1000
        self.max_batch = max_batch
        self.preempt_tokens = preempt_tokens  # 0: a row runs to its end once started
        self.preempted = 0
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.carry: Job | None = None  # a job that did not fit the last batch: it opens the next one
        self.batches = 0  # generate calls, for stats and tests
        self.rows = 0
        self.busy = False
        self.cancelled = 0  # rows stopped because their client left
        self.timed_out = 0  # rows stopped at their deadline
        self.live: dict[int, Job] = {}  # submitted and not yet finished (stop_all answers them)
        threading.Thread(target=self._work, name="kit-serve-engine", daemon=True).start()

    def submit(self, job: Job) -> Job:
        self.live = {k: j for k, j in self.live.items() if not j.done.is_set()}
        self.live[id(job)] = job
        self.jobs.put(job)
        return job

    def stop_all(self, drain_timeout_s: float) -> int:
        """Answer every unfinished job now (503, kit.runtime.serve.http): the drain deadline has passed.
        Running rows stop at their next token. Returns how many were stopped."""
        stopped = [j for j in list(self.live.values()) if not j.done.is_set()]
        for job in stopped:
            job.cancel()
            job.finish(error=ServerStopping(drain_timeout_s))
        return len(stopped)

    def generate(self, prompt_ids: list[int], modifier: str | None, settings: dict, timeout: float = 300.0) -> tuple:
        """Blocking: the (text, prompt_tokens, completion_tokens, finish) of one job."""
        job = self.submit(Job(prompt_ids, modifier, settings, timeout))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    # -- worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = [j for j in self._next_batch() if self._still_wanted(j)]
            if not batch:
                continue
            self.busy = True
            try:
                self._run_isolated(batch)
            finally:
                self.busy = False

    def _still_wanted(self, job: Job) -> bool:
        if job.cancelled:
            self._cancel(job)
        elif time.monotonic() > job.deadline:
            self._time_out(job)
        return not job.done.is_set()

    def _cancel(self, job: Job) -> bool:
        self.cancelled += 1
        job.finish(error=Cancelled())
        return True

    def _time_out(self, job: Job) -> bool:
        self.timed_out += 1
        job.finish(error=DeadlineExceeded(job.timeout))
        return True

    def _run_isolated(self, batch: list[Job]) -> None:
        """One batch; if it fails, its unfinished rows again one by one: a bad row fails alone."""
        for job in batch:
            job.run_start, job.paused = len(job.ids), False
        try:
            self._run(batch)
        except BaseException as e:  # the request fails; the server goes on
            left = [j for j in batch if not j.done.is_set()]
            if len(batch) == 1 or not left:
                for job in left:
                    job.finish(error=e)
                return
            for job in left:
                job.ids = job.ids[: job.run_start]
                self._run_isolated([job])
            return
        for job in batch:
            if job.paused and not job.done.is_set():
                self.jobs.put(job)  # continues behind those who waited
            elif not job.done.is_set():  # the watcher never ended it (generate stopped first)
                self._end(job, "length")

    def _next_batch(self) -> list[Job]:
        first, self.carry = self.carry or self.jobs.get(), None
        if self.batching != "mixed" or not first.greedy:
            return [first]
        batch, deadline = [first], time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not job.greedy or not self._fits(batch, job):
                self.carry = job  # first in the next batch: never sent to the back of the queue
                break
            batch.append(job)
        return batch

    def _fits(self, batch: list[Job], job: Job) -> bool:
        """At most ``max_loaded`` distinct modifiers (all stay attached at once)."""
        names = {j.modifier for j in batch if j.modifier} | ({job.modifier} if job.modifier else set())
        return len(names) <= self.store.max_loaded

    def _run(self, batch: list[Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        tok = self.resident.tokenizer
        names = [self.store.adapter(j.modifier) if j.modifier else None for j in batch]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        rows = [j.prompt_ids + j.ids for j in batch]  # a set-aside row continues from its tokens so far
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left-padded
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        longest = max(j.todo_max for j in batch)
        kwargs = {
            "max_new_tokens": longest,
            "pad_token_id": pad,
            "logits_processor": LogitsProcessorList([RowFloor(batch, self.decoder.eos)]),
            "stopping_criteria": StoppingCriteriaList([RowWatch(self, batch, width)]),
        }
        first = batch[0].settings
        if first["temperature"] > 0:
            kwargs.update(do_sample=True, temperature=first["temperature"], top_p=first["top_p"])
            torch.manual_seed(first["seed"])
        else:
            kwargs["do_sample"] = False
        device = self.resident.device
        encoded = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        with self.resident.lock, torch.inference_mode():
            self._generate(encoded, names, kwargs)
        self.batches += 1
        self.rows += len(batch)

    def _generate(self, encoded, names: list[str | None], kwargs: dict):
        if len(set(names)) == 1 or self.resident.peft is None:  # one modifier (or the base) for all rows
            self.resident.activate(names[0])
            return self.resident.forward_model(names[0]).generate(**encoded, **kwargs)
        self.resident.activate(None)  # unmerged, nothing forced: the rows choose
        return self.resident.peft.generate(**encoded, adapter_names=[n or BASE_ROW for n in names], **kwargs)

    # -- one row, one token --------------------------------------------------------------

    def step(self, job: Job, token: int) -> bool:
        """Take the row's newest token; True when the row is finished (its answer is handed back)."""
        if job.cancelled:
            return self._cancel(job)
        if token in self.decoder.eos:
            return self._end(job, "stop", extra=1)
        may_stop = len(job.ids) >= job.settings["min_new_tokens"]
        if may_stop and token == self.decoder.turn_start and self.decoder.answer_ids(job.ids)[0]:
            return self._end(job, "stop", extra=1)  # the model starts another turn: the answer ended
        job.ids.append(token)
        if job.settings.get("stop") or job.on_text is not None:
            answer, pending = self.decoder.answer_ids(job.ids)
            text = self.decoder.text(answer)
            for s in job.settings.get("stop") or ():
                if may_stop and s in text:
                    return self._end(job, "stop", text=text[: text.index(s)])
            if job.on_text is not None and not pending:
                self._emit(job, text, hold=max((len(s) - 1 for s in job.settings.get("stop") or ()), default=0))
        if len(job.ids) >= job.settings["max_new_tokens"]:
            return self._end(job, "length")
        if time.monotonic() > job.deadline:
            return self._time_out(job)
        if self.preempt_tokens and job.greedy and len(job.ids) - job.run_start >= self.preempt_tokens and not self.jobs.empty():
            job.paused = True
            self.preempted += 1
            return True
        return False

    def _emit(self, job: Job, text: str, hold: int = 0) -> None:
        """Stream what is safe to send: not a partial character, not what may start a stop string."""
        safe = text.rstrip("\ufffd")
        safe = safe[: max(job.sent, len(safe) - hold)]
        if len(safe) > job.sent:
            job.on_text(safe[job.sent :])
            job.sent = len(safe)

    def _end(self, job: Job, finish: str, extra: int = 0, text: str | None = None) -> bool:
        answer, _ = self.decoder.answer_ids(job.ids)
        if text is None:
            text = self.decoder.text(answer)
        if job.on_text is not None:
            self._emit(job, text)
        job.finish((text, len(job.prompt_ids), len(job.ids) + extra, finish))
        return True
