"""Generation on the resident base with per-request modifiers: continuous batching.

Every request becomes a ``Job`` on one queue, served by one worker thread, so the model is
only ever touched by that thread and nothing is reloaded between requests for different
modifiers. The worker runs kit's decode loop (kit.lora.decode) over the fused LoRA path
(kit.lora.fused):

``mixed``   up to ``max_batch`` rows decode together, each with its own modifier (a LoRA
            slot per row; ``base`` rows use none) and its own sampling (greedy, or
            temperature/top_p from a generator seeded by the request's own ``seed``, so a
            sampled answer does not depend on its batch mates). A row that ends frees its
            place at once and a waiting request is prefilled into it before the next step:
            a long answer never holds short ones behind it. Requests that arrive within
            ``batch_wait_ms`` of an idle server share their prefill.
``switch``  one request at a time (the same loop with one row).

Each row is watched after every generated token (``Engine.step``): it ends on its own
end-of-turn token, its own ``max_tokens``, a ``stop`` string, its deadline, or when its
client has gone (``Job.cancel``), and its answer is handed back at once. When every place
is taken and requests wait, a row that has run ``preempt_tokens`` tokens since it was
(re)admitted is set aside and continues later from its prompt and its tokens so far (its
sampling generator goes with it), at the back of the queue. A modifier is attached when a
request for it is admitted, never evicting one that rows in flight use (it waits for room
instead); a modifier that fails to attach fails its own request alone, and a step that
fails is retried row by row, so one bad request fails alone. Prompts arrive as token ids,
already checked against the model's context by the caller. Adapters the fused path does
not compute (DoRA, ...) run alone through PEFT; a base the decode loop cannot run
(kit.lora.decode.unsupported) is served one request at a time through HF ``generate``.

``bench/serve.py`` measures requests/s for base, one and mixed modifiers;
``bench/serve_load.py`` what one misbehaving client costs the others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kit.lora.resident import AdapterBusy

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
    run_start: int = 0  # len(ids) when it was last admitted
    paused: bool = False  # set aside for waiting requests; continues when admitted again
    generator: object = None  # sampled rows: a torch.Generator seeded with the request's seed
    retried: bool = False  # its step failed once beside others: it now runs alone

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
        self.max_batch = max_batch if batching == "mixed" else 1
        self.preempt_tokens = preempt_tokens  # 0: a row runs to its end once started
        self.preempted = 0
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.waiting: deque[Job] = deque()  # taken off the queue, not yet admitted
        self.active: list[Job] = []  # rows in the decode loop
        self.batches = 0  # prefill calls (rows admitted together), for stats and tests
        self.rows = 0
        self.steps = 0  # decode steps
        self.busy = False
        self.closed = False  # close(): the worker ends (a server inside another process stops with it)
        self.cancelled = 0  # rows stopped because their client left
        self.timed_out = 0  # rows stopped at their deadline
        self.live: dict[int, Job] = {}  # submitted and not yet finished (stop_all answers them)
        pad = self.resident.tokenizer.pad_token_id
        self.pad = pad if pad is not None else self.resident.tokenizer.eos_token_id
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

    def close(self) -> None:
        """End the worker once it is idle or between steps; requests still unfinished are answered 503."""
        self.closed = True
        self.jobs.put(Job([], None, {}, cancelled=True))  # wakes a worker waiting for work

    def generate(self, prompt_ids: list[int], modifier: str | None, settings: dict, timeout: float = 300.0) -> tuple:
        """Blocking: the (text, prompt_tokens, completion_tokens, finish) of one job."""
        job = self.submit(Job(prompt_ids, modifier, settings, timeout))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    # -- worker ------------------------------------------------------------------------

    def _work(self) -> None:
        with self.resident.lock:
            loop = self.resident.decoder()
        while not self.closed:
            if loop is None:  # a base kit's loop cannot run: one request at a time through HF generate
                job = self._take(block=True)
                if job is not None and not self.closed and self._still_wanted(job):
                    self.busy = True
                    try:
                        self._run_alone(job)
                    finally:
                        self.busy = False
                continue
            self._collect(block=not self.active)
            if self.closed:
                break
            self.busy = bool(self.active or self.waiting)
            try:
                with self.resident.lock:
                    self._turn(loop)
            except BaseException as e:  # a bug must not stop the worker: the rows in flight fail, the server goes on
                self._step_failed(loop, e)
            finally:
                self.busy = bool(self.active)

        self.stop_all(0.0)
        self.busy = False

    def _take(self, block: bool) -> Job | None:
        try:
            return self.jobs.get(block=block)
        except queue.Empty:
            return None

    def _collect(self, block: bool) -> None:
        """Move queued jobs to ``waiting``; an idle server waits for the first and then
        ``batch_wait_ms`` for company (they share a prefill)."""
        if block and not self.waiting:
            self.waiting.append(self.jobs.get())
            deadline = time.monotonic() + self.wait
            while len(self.waiting) < self.max_batch:
                try:
                    self.waiting.append(self.jobs.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
        while True:
            job = self._take(block=False)
            if job is None:
                return
            self.waiting.append(job)

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

    # -- one turn: admit, step, hand back ------------------------------------------------

    def _turn(self, loop) -> None:
        import torch

        with torch.inference_mode():
            self._preempt(loop)
            fresh = self._admissions()
            logits = self._advance(loop, fresh)
            if logits is None:
                return
            self.steps += 1
            for job, token in zip(list(self.active), self._choose(logits)):
                if job.done.is_set() or self.step(job, token):
                    self._leave(loop, job)

    def _admissions(self) -> list[tuple[Job, int | None]]:
        """Waiting jobs that get a place now, each with its LoRA slot (modifiers attached here)."""
        exclusive = any(j.retried or not self._fused(j) for j in self.active)
        admitted, keep = [], {self.resident_name(j) for j in self.active if j.modifier}
        for job in list(self.waiting):
            if exclusive or len(self.active) + len(admitted) >= self.max_batch:
                break
            if not self._still_wanted(job):
                self.waiting.remove(job)
                continue
            try:
                name = self.store.adapter(job.modifier, keep=keep) if job.modifier else None
            except AdapterBusy:
                continue  # every attached modifier is in use: it waits for a row to end
            except Exception as e:  # a modifier that cannot be loaded fails its own request
                self.waiting.remove(job)
                job.finish(error=e)
                continue
            alone = job.retried or (name is not None and not self._fused(job))
            if alone and (admitted or self.active):
                continue  # runs once the loop is empty
            self.waiting.remove(job)
            admitted.append((job, None if name is None or alone else self.resident.fused.slot_of[name]))
            if name:
                keep.add(name)
            if alone:
                break
        return admitted

    def resident_name(self, job: Job) -> str:
        from kit.lora.resident import adapter_name

        return adapter_name(self.store.folders[job.modifier])

    def _fused(self, job: Job) -> bool:
        fused = self.resident.fused
        return job.modifier is None or (fused is not None and self.resident_name(job) in fused.slot_of)

    def _advance(self, loop, fresh):
        """One decode step for the running rows, then the prefill of the admitted ones; the
        next-token logits of every row, in ``self.active`` order (None: no rows)."""
        import torch

        loop.fused = self.resident.fused  # made when the first modifier was attached (maybe just now)
        parts = []
        if self.active:
            self._modes(fresh)
            try:
                parts.append(loop.step([j.ids[-1] if j.ids else j.prompt_ids[-1] for j in self.active]))
            except Exception as e:
                self._step_failed(loop, e)
                return None
        if fresh:
            parts.append(self._prefill(loop, fresh))
        parts = [p for p in parts if p is not None]
        return torch.cat(parts) if parts else None

    def _modes(self, fresh) -> None:
        """The resident's LoRA mode for this turn: per-row slots, or one non-fused adapter through PEFT."""
        rows = list(self.active) + [j for j, _ in fresh]
        solo = [j for j in rows if j.modifier and not self._fused(j)]
        self.resident.activate(self.resident_name(solo[0]) if solo else None)

    def _prefill(self, loop, fresh):
        """Admit the new rows together; if that fails, each alone (a bad row fails alone)."""
        import torch

        self._modes(fresh)
        try:
            logits = loop.admit([j.prompt_ids + j.ids for j, _ in fresh], [s for _, s in fresh], [j for j, _ in fresh])
        except Exception as e:
            if len(fresh) == 1:
                fresh[0][0].finish(error=e)
                return None
            kept = [self._prefill(loop, [f]) for f in fresh]
            kept = [k for k in kept if k is not None]
            return torch.cat(kept) if kept else None
        for job, _ in fresh:
            job.run_start, job.paused = len(job.ids), False
            if not job.ids:
                self.rows += 1  # a new request (not one continuing after a pause or a failed step)
            if job.generator is None and not job.greedy:
                job.generator = torch.Generator(device=logits.device).manual_seed(int(job.settings["seed"]))
            self.active.append(job)
        self.batches += 1
        return logits

    def _step_failed(self, loop, error: BaseException) -> None:
        """A step failed: every running row continues later alone; one that fails alone fails."""
        loop.clear()
        for job in self.active:
            if job.retried:
                job.finish(error=error)
            else:
                job.retried = True
                self.waiting.appendleft(job)
        self.active = []

    def _choose(self, logits) -> list[int]:
        """Each row's next token: greedy argmax or its own sampling; no end-of-turn before its min_tokens."""
        import torch
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        eos = sorted(self.decoder.eos)
        floor = [j.todo_min > 0 for j in self.active]
        if eos and any(floor):
            rows = torch.tensor([r for r, f in enumerate(floor) if f], device=logits.device)
            logits[rows[:, None], torch.tensor(eos, device=logits.device)] = float("-inf")
        tokens = logits.argmax(-1).tolist()
        for row, job in enumerate(self.active):
            if job.greedy:
                continue
            scores = TemperatureLogitsWarper(job.settings["temperature"])(None, logits[row : row + 1])
            if job.settings["top_p"] < 1.0:
                scores = TopPLogitsWarper(job.settings["top_p"])(None, scores)
            probs = torch.softmax(scores, dim=-1)
            tokens[row] = int(torch.multinomial(probs[0], 1, generator=job.generator))
        return tokens

    def _leave(self, loop, job: Job) -> None:
        loop.drop(job)
        self.active = list(loop.tags())  # the decoder moved its last row into this one's place
        if job.paused and not job.done.is_set():
            self.waiting.append(job)  # continues behind those who waited

    def _preempt(self, loop) -> None:
        """Every place taken and requests waiting: set aside the longest-running row past preempt_tokens."""
        if not self.preempt_tokens or not self.waiting or len(self.active) < self.max_batch:
            return
        runs = [(len(j.ids) - j.run_start, j) for j in self.active]
        ran, job = max(runs, key=lambda r: r[0])
        if ran >= self.preempt_tokens:
            job.paused = True
            self.preempted += 1
            self._leave(loop, job)

    # -- a base kit's loop cannot run ------------------------------------------------------

    def _run_alone(self, job: Job) -> None:
        """One job through HF ``generate`` (a base the decode loop cannot run)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        try:
            name = self.store.adapter(job.modifier) if job.modifier else None
            ids = torch.tensor([job.prompt_ids], device=self.resident.device)
            kwargs = {
                "max_new_tokens": job.todo_max,
                "pad_token_id": self.pad,
                "logits_processor": LogitsProcessorList([RowFloor([job], self.decoder.eos)]),
                "stopping_criteria": StoppingCriteriaList([RowWatch(self, [job], ids.shape[1])]),
                "do_sample": not job.greedy,
            }
            if not job.greedy:
                kwargs.update(temperature=job.settings["temperature"], top_p=job.settings["top_p"])
                torch.manual_seed(job.settings["seed"])
            with self.resident.lock, torch.inference_mode():
                self.resident.activate(name)
                self.resident.forward_model(name).generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            self.batches += 1
            self.rows += 1
            if not job.done.is_set():
                self._end(job, "length")
        except BaseException as e:  # the request fails; the server goes on
            job.finish(error=e)

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
