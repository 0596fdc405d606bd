"""Held-out tasks of the bundled modifiers (``kit/last_digit``, ``kit/reverse``) and
``kit/modifier_mix``: all three modifiers' held-out questions in one task, for
scoring a served system whose router must pick the right modifier per sample.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import exact
from inspect_ai.solver import generate

from kit.core.data import bundled, read_jsonl


def rows(name: str) -> list[dict]:
    return read_jsonl(bundled(name), ("question", "answer"))


def qa_task(rows: list[dict]) -> Task:
    samples = [Sample(input=r["question"], target=r["answer"], id=i) for i, r in enumerate(rows)]
    return Task(dataset=samples, solver=generate(), scorer=exact())


@task
def last_digit() -> Task:
    return qa_task(rows("modifiers/last_digit_test.jsonl"))


@task
def reverse() -> Task:
    return qa_task(rows("modifiers/reverse_test.jsonl"))


@task
def modifier_mix(per_task: int = 10) -> Task:
    """``per_task`` held-out rows of each modifier, interleaved."""
    parts = [rows(n)[:per_task] for n in ("parity_test.jsonl", "modifiers/last_digit_test.jsonl", "modifiers/reverse_test.jsonl")]
    return qa_task([r for group in zip(*parts) for r in group])
