"""kit.eval.providers.batching: Inspect's HF batches without Inspect's waits. The completions are
Inspect's own (its ``_generate_batch``): tests/test_eval_strategies.py compares every strategy at
batch sizes 1 and 32 through it."""

import time
from dataclasses import dataclass
from queue import Queue

from kit.eval.providers import batching


@dataclass
class Input:
    batch_size: int


@dataclass
class Item:
    key: str
    input: Input


def queued(*items: Item) -> Queue:
    q: Queue = Queue()
    for item in items:
        q.put(item)
    return q


def test_a_full_batch_starts_without_waiting_for_more():
    q = queued(*(Item("a", Input(2)) for _ in range(3)))
    assert [len(b) for b in batching.drain(q, quiet_s=60)] == [2]  # 60 s quiet window never reached
    assert q.qsize() == 1


def test_a_partial_batch_starts_once_the_queue_is_quiet_and_keys_stay_apart():
    q = queued(Item("a", Input(8)), Item("b", Input(8)), Item("a", Input(8)))
    start = time.monotonic()
    batches = batching.drain(q, quiet_s=0.05)
    assert [[i.key for i in b] for b in batches] == [["a", "a"], ["b"]]  # grouped by key, in order of first request
    assert time.monotonic() - start < 1.0  # Inspect's own drain waits 2 s of quiet here


def test_install_routes_inspects_hf_provider_through_kit():
    from inspect_ai.model._providers import hf

    batching.install()
    assert hf.batched_generate is batching.batched_generate
