"""``kit serve``'s engine in process (kit.runtime.serve.engine): continuous batching over kit's decode
loop and the fused LoRA path, on a tiny peaked Qwen2 with three random modifiers. Greedy answers in a
batch that mixes modifiers equal the same requests one at a time; rows join a running batch as soon as
there is a place (a long answer never holds short ones); sampled rows share steps with greedy ones and
depend only on their own seed; with every place taken, a long row yields to waiting requests and
continues with the same tokens; a modifier that fails to load fails its own request alone."""

from __future__ import annotations

import threading
import time

import pytest
from lora_models import build_adapter, build_base

from kit.runtime.registry import Modifier, Registry
from kit.runtime.serve.engine import Engine, Job
from kit.runtime.serve.store import ModifierStore

pytestmark = pytest.mark.slow  # it serves (an engine thread decoding requests): not the unit layer

NAMES = ["patterns", "rslora_head", "small"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    where = tmp_path_factory.mktemp("engine")
    base = build_base("qwen2", where / "base")
    mods = [Modifier(k, build_adapter(base, "qwen2", where / k, i + 1, k), 4, "-") for i, k in enumerate(NAMES)]
    return Registry(where / "modifiers.json", base, "-", mods, None)


def engine(registry, **kw) -> Engine:
    store = ModifierStore(
        registry, registry.base, "cpu", "fp32", preload=kw.pop("preload", True), max_loaded=kw.pop("max_loaded", 4)
    )
    return Engine(store, **{"batching": "mixed", "batch_wait_ms": 50, "max_batch": 16, "preempt_tokens": 32, **kw})


def settings(tokens: int, floor: int = 0, temperature: float = 0.0, seed: int = 0) -> dict:
    return {"max_new_tokens": tokens, "min_new_tokens": floor, "temperature": temperature, "top_p": 0.9, "seed": seed, "stop": []}


REQUESTS = [  # (prompt ids, modifier, max tokens)
    ([5, 9, 17, 33, 65, 129, 7], "patterns", 12),
    ([40, 41, 42], None, 5),
    ([100, 101, 102, 103], "small", 9),
    ([7, 8], "rslora_head", 12),
    ([5, 9, 17], "patterns", 3),
    ([11, 12, 13, 14, 15], None, 10),
]


def together(eng: Engine, jobs: list[Job]) -> list[tuple]:
    for job in jobs:
        eng.submit(job)
    for job in jobs:
        assert job.done.wait(120) and job.error is None, job.error
    return [job.result for job in jobs]


def test_mixed_continuous_batches_equal_one_at_a_time(registry):
    eng = engine(registry)
    alone = [eng.generate(p, m, settings(n, n)) for p, m, n in REQUESTS]
    calls = eng.batches
    got = together(eng, [Job(p, m, settings(n, n)) for p, m, n in REQUESTS])
    assert got == alone
    assert eng.batches - calls < len(REQUESTS), "rows shared prefills"
    assert all(r[2] == n for r, (_, _, n) in zip(got, REQUESTS))  # min_tokens held per row


def test_short_requests_join_while_a_long_one_runs(registry):
    """The long answer keeps running; shorts admitted at the next step end long before it. The shorts
    are submitted from the long row's first streamed text (called by the engine's worker between steps),
    so they arrive while it is mid-answer on any machine: a tiny model decodes 150 tokens faster than
    another thread notices it started (CI stop 28 lost that race over HTTP)."""
    eng = engine(registry, preempt_tokens=0)
    long_alone = eng.generate([5, 9, 17], "patterns", settings(150, 150))
    shorts = [Job(p, m, settings(4, 4)) for p, m, _ in REQUESTS[:3]]
    done_at, started_at = {}, []
    for job in shorts:
        job.on_done = lambda j=job: done_at.setdefault(id(j), len(long.ids))

    def first_text(_text: str) -> None:
        if not started_at:
            started_at.append(len(long.ids))
            [eng.submit(job) for job in shorts]

    long = Job([5, 9, 17], "patterns", settings(150, 150), on_text=first_text)
    eng.submit(long)
    assert long.done.wait(120) and long.error is None, long.error
    assert started_at and started_at[0] < 150, "the long row streamed its answer"
    for job in shorts:
        assert job.done.wait(120) and job.error is None, job.error
    assert long.result == long_alone
    assert max(done_at.values()) < 150, "every short answer ended while the long one was still generating"
    assert [s.result for s in shorts] == [eng.generate(p, m, settings(4, 4)) for p, m, _ in REQUESTS[:3]]


def test_sampled_rows_batch_and_depend_only_on_their_seed(registry):
    eng = engine(registry)
    sampled = lambda seed: Job([40, 41, 42], "small", settings(10, 10, temperature=0.8, seed=seed))  # noqa: E731
    alone = together(eng, [sampled(7)])[0]
    mates = [Job(p, m, settings(n, n)) for p, m, n in REQUESTS]
    got = together(eng, [mates[0], sampled(7), *mates[1:], sampled(8)])
    assert got[1] == alone, "a sampled answer does not depend on its batch mates"
    assert got[-1] != alone, "another seed, another draw"
    steps = eng.steps
    together(eng, [sampled(7), Job([5, 9], "patterns", settings(10, 10))])
    assert eng.steps - steps <= 11, "the sampled and the greedy row decoded in the same steps"


def test_full_batch_yields_to_waiting_requests_and_continues_unchanged(registry):
    eng = engine(registry, max_batch=2, preempt_tokens=8)
    cases = [([5, 9, 17], "patterns", 40), ([40, 41], "small", 40), ([7, 8, 9], None, 40), ([11, 12], "rslora_head", 6)]
    alone = [eng.generate(p, m, settings(n, n)) for p, m, n in cases]
    got = together(eng, [Job(p, m, settings(n, n)) for p, m, n in cases])
    assert got == alone and eng.preempted > 0


def test_a_modifier_that_fails_to_load_fails_alone(registry, tmp_path):
    import shutil

    broken = shutil.copytree(registry.modifiers[1].path, tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    mods = [*registry.modifiers, Modifier("broken", broken, 8, "-")]
    eng = engine(Registry(registry.path, registry.base, "-", mods, None), preload=False, max_loaded=2)
    jobs = [Job(p, m, settings(n, n)) for p, m, n in REQUESTS[:3]] + [Job([5, 6], "broken", settings(4))]
    for job in jobs:
        eng.submit(job)
    for job in jobs:
        job.done.wait(120)
    assert all(j.error is None for j in jobs[:3]) and "adapter_model.safetensors" in str(jobs[3].error)
    assert [j.result for j in jobs[:3]] == [eng.generate(p, m, settings(n, n)) for p, m, n in REQUESTS[:3]]


def test_cancel_and_deadline_between_steps(registry):
    eng = engine(registry)
    job = eng.submit(Job([5, 9], "patterns", settings(200, 200)))
    while len(job.ids) < 3:
        time.sleep(0.01)
    job.cancel()
    assert job.done.wait(30) and type(job.error).__name__ == "Cancelled" and len(job.ids) < 200
    late = eng.submit(Job([5, 9], None, settings(200, 200), timeout=0.2))
    while len(late.ids) < 3 and not late.done.is_set():
        time.sleep(0.001)
    late.deadline = time.monotonic()  # passed while it runs (an idle CPU can decode 200 tokens inside 0.2 s)
    assert late.done.wait(30) and "request_timeout_s" in str(late.error) and len(late.ids) < 200
    threading.Event().wait(0.05)
    assert eng.cancelled == 1 and eng.timed_out == 1 and not eng.active
