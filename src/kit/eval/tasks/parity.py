"""The demo tasks: is a number even or odd?

``parity``: held-out four-digit numbers. The test rows never appear in the
training file (both come from one seeded draw without replacement), so a
rising score means the adapter generalised.

``parity_long``: five-digit numbers, longer than anything in training (a
seeded draw, the same on every machine): a second task with a score of its own.
"""

import random

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import exact
from inspect_ai.solver import generate

from kit.core.data import bundled, read_jsonl


def parity_task(rows: list[dict]) -> Task:
    return Task(
        dataset=[Sample(input=r["question"], target=r["answer"], id=i) for i, r in enumerate(rows)],
        solver=generate(),
        scorer=exact(),
    )


@task
def parity(limit: int | None = None) -> Task:
    return parity_task(read_jsonl(bundled("parity_test.jsonl"), ("question", "answer"))[:limit])


@task
def parity_long(samples: int = 100, seed: int = 0) -> Task:
    numbers = random.Random(seed).sample(range(10_000, 100_000), samples)
    rows = [{"question": f"Is {n} even or odd?", "answer": "even" if n % 2 == 0 else "odd"} for n in numbers]
    return parity_task(rows)
