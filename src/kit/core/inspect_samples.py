"""Per-sample rows read back from Inspect logs: what was asked, what was expected, what the model
answered and how it scored. The per-sample W&B tables, the paired tests and the sweep page all
read samples through here, so they all see the same rows.

A log that is missing or unreadable yields no rows (a log cut short by a kill holds the samples
written before it): a table or a comparison then shows fewer rows, never a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TEXT_CHARS = 2000  # longer inputs and completions are cut (with a marker) in tables and the page


@dataclass
class SampleRow:
    task: str  # the task's short name (``parity`` for ``kit/parity``), as in summary scores
    id: str
    epoch: int
    input: str
    target: str
    completion: str
    scores: dict[str, float | None] = field(default_factory=dict)  # scorer name -> value as a number
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.task, self.id, self.epoch)

    def score_key(self, scorer: str) -> str:
        """The summary's key of one scorer: ``task`` when the task has one scorer, else ``task/scorer``."""
        return self.task if len(self.scores) == 1 else f"{self.task}/{scorer}"


def clip(text: str, limit: int = TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def as_text(value) -> str:
    """A sample's input or target as plain text: chat messages joined by role, lists by newlines."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for item in value:
            role = getattr(item, "role", None)
            text = getattr(item, "text", None)
            parts.append(f"{role}: {text}" if role is not None and text is not None else as_text(item))
        return "\n".join(parts)
    return str(value)


def numeric(value) -> float | None:
    from inspect_ai.scorer import value_to_float

    try:
        return value_to_float()(value)
    except (TypeError, ValueError):  # dict-valued scores: not one number per sample
        return None


def read_samples(path: str | Path, limit: int | None = None) -> list[SampleRow]:
    """The samples of one Inspect log, in the log's order (at most ``limit``). One read of the
    whole log without its event transcripts (Inspect's per-sample reader costs ~15 ms a sample)."""
    from inspect_ai.log import read_eval_log

    if not Path(path).is_file():
        return []
    try:
        log = read_eval_log(str(path), resolve_attachments="core", exclude_fields={"events", "store"})
    except Exception:  # a truncated or foreign file: no per-sample data from it
        return []
    task = log.eval.task.split("/")[-1]
    return [as_row(task, sample) for sample in (log.samples or [])[:limit]]


def as_row(task: str, sample) -> SampleRow:
    return SampleRow(
        task=task,
        id=str(sample.id),
        epoch=int(sample.epoch),
        input=as_text(sample.input),
        target=as_text(sample.target),
        completion=sample.output.completion if sample.output else "",
        scores={name: numeric(score.value) for name, score in (sample.scores or {}).items()},
        error=sample.error.message if sample.error else None,
    )


def read_all(paths: list[str], limit: int | None = None) -> dict[tuple[str, str, int], SampleRow]:
    """Rows of several logs keyed by (task, sample id, epoch); a later log's row replaces an earlier one."""
    out: dict[tuple[str, str, int], SampleRow] = {}
    for path in paths:
        for row in read_samples(path, limit):
            out[row.key] = row
    return out
