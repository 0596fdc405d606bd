"""The demo task: is a number even or odd? Held-out numbers only.

The test rows never appear in the training file (both come from one seeded
draw without replacement), so a rising score means the adapter generalised.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import exact
from inspect_ai.solver import generate

from kit.data import bundled, read_jsonl


@task
def parity(limit: int | None = None) -> Task:
    rows = read_jsonl(bundled("parity_test.jsonl"), ("question", "answer"))[:limit]
    return Task(
        dataset=[Sample(input=r["question"], target=r["answer"], id=i) for i, r in enumerate(rows)],
        solver=generate(),
        scorer=exact(),
    )
