"""Batched generation for the HF-backed providers (Inspect's ``hf/`` and kit's ``peft/``) without
Inspect's waiting.

Inspect 0.3.285's ``hf`` provider batches concurrent requests in one background thread
(``inspect_ai.model._providers.hf.batched_generate``) but waits for the queue to stay quiet for
2 s before it generates a partial batch, and each request then polls its result once a second
(``anyio.sleep(1)``). On a small model every batch costs up to 3 s of an idle machine; measured
here: kit's own strategy comparison (tests/test_eval_strategies.py, 8 evals) ran with the CPUs
over 90% idle. kit's replacement keeps Inspect's batch keys and its ``_generate_batch`` (the same
tokenization, padding and decoding, so the same completions) and changes only the waiting: a batch
starts once ``batch_size`` requests are in or the queue has been quiet for ``QUIET_S``, and a
request wakes as soon as its result is set.

``install()`` swaps the function in Inspect's module; tests/test_stack.py pins the Inspect
version it was written against (a new one may have fixed this, or changed the names).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from concurrent.futures import Future
from queue import Empty, Queue

# requests of one eval arrive together (Inspect starts up to max_connections samples at once), so
# a short quiet window still fills the batch; while a batch generates the next one queues up
QUIET_S = 0.02

_queue: Queue = Queue()
_worker: threading.Thread | None = None
_lock = threading.Lock()


def drain(queue: Queue, quiet_s: float) -> list[list]:
    """Queued requests grouped by batch key (Inspect's ``_QueueItem``): waits for the first, then
    takes more until ``batch_size`` are in or none came for ``quiet_s``."""
    batches: dict[Hashable, list] = {}
    item = queue.get()
    collected = 0
    while True:
        batches.setdefault(item.key, []).append(item)
        collected += 1
        if collected >= item.input.batch_size:
            break
        try:
            item = queue.get(timeout=quiet_s)
        except Empty:
            break
    return list(batches.values())


def _work() -> None:
    from inspect_ai.model._providers.hf import _generate_batch

    while True:
        for batch in drain(_queue, QUIET_S):
            _generate_batch(batch)  # sets each item's future (its result or its exception)


async def batched_generate(input):
    """Drop-in for Inspect's ``hf.batched_generate``: one request, generated in a batch."""
    global _worker
    from inspect_ai.model._providers.hf import _batch_key, _QueueItem

    with _lock:
        if _worker is None:
            _worker = threading.Thread(target=_work, name="kit-hf-batches", daemon=True)
            _worker.start()
    future: Future = Future()
    _queue.put(_QueueItem(input=input, future=future, key=_batch_key(input)))
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another async backend (trio): poll, at a step far below a batch's time
        import anyio

        while not future.done():
            await anyio.sleep(0.005)
        return future.result()
    return await asyncio.wrap_future(future)


def install() -> None:
    """Route Inspect's HF batching through kit's (idempotent)."""
    from inspect_ai.model._providers import hf

    hf.batched_generate = batched_generate
