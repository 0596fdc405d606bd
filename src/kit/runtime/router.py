"""Routers (config group ``router``): which modifier answers a request for ``model=auto``.

``rules``    the modifiers' own ``keywords`` (case-insensitive substrings) and ``patterns``
             (case-insensitive regexes) from ``phase.modifiers``; first match in registry order.
``learned``  a bag-of-words centroid per modifier, learned from the prompts of its own
             training set (``router_learned.json``, written by ``phase=modifier``); the
             closest centroid by cosine similarity wins if it reaches ``router.min_score``.
``none``     always the base.

A router returns ``(modifier name or None for the base, score or None)``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from kit.core.data import read_jsonl
from kit.core.errors import KitError

LEARNED_FILE = "router_learned.json"
WORD = re.compile(r"[a-z]+|\d+")


class NoRouter:
    kind = "none"

    def route(self, text: str) -> tuple[str | None, float | None]:
        return None, None


class RulesRouter:
    kind = "rules"

    def __init__(self, modifiers):
        self.rules = [(m.name, [k.lower() for k in m.keywords], [re.compile(p, re.I) for p in m.patterns]) for m in modifiers]

    def route(self, text: str) -> tuple[str | None, float | None]:
        lowered = text.lower()
        for name, keywords, patterns in self.rules:
            if any(k in lowered for k in keywords) or any(p.search(text) for p in patterns):
                return name, 1.0
        return None, None


def features(text: str) -> dict[str, float]:
    """Unit-length word counts; every number is one token (``<num>``): the words carry the task."""
    counts = Counter("<num>" if w.isdigit() else w for w in WORD.findall(text.lower()))
    norm = math.sqrt(sum(c * c for c in counts.values())) or 1.0
    return {w: c / norm for w, c in counts.items()}


class LearnedRouter:
    kind = "learned"

    def __init__(self, centroids: dict[str, dict[str, float]], min_score: float = 0.3):
        self.centroids = centroids
        self.min_score = min_score

    def scores(self, text: str) -> dict[str, float]:
        v = features(text)
        return {name: sum(v[w] * c.get(w, 0.0) for w in v) for name, c in self.centroids.items()}

    def route(self, text: str) -> tuple[str | None, float | None]:
        scores = self.scores(text)
        if not scores:
            return None, None
        name = max(scores, key=scores.get)
        return (name if scores[name] >= self.min_score else None), scores[name]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kind": "bag_of_words_centroids", "centroids": self.centroids}))

    @classmethod
    def load(cls, path: Path, min_score: float) -> LearnedRouter:
        try:
            return cls(json.loads(Path(path).read_text())["centroids"], min_score)
        except (OSError, ValueError, KeyError) as e:
            raise KitError(f"learned router {str(path)!r} is unreadable ({e}); expected the file phase=modifier writes") from None


def centroid(prompts: list[str]) -> dict[str, float]:
    total: Counter = Counter()
    for prompt in prompts:
        total.update(features(prompt))
    norm = math.sqrt(sum(v * v for v in total.values())) or 1.0
    return {w: v / norm for w, v in total.items()}


def train_learned(root: Path, entries: list[dict]) -> LearnedRouter:
    """One centroid per modifier from the prompts of its own training set."""

    centroids = {}
    for e in entries:
        column = e["dataset"]["prompt_column"]
        centroids[e["name"]] = centroid([str(r[column]) for r in read_jsonl(e["dataset"]["file"], (column,))])
    return LearnedRouter(centroids)


def make_router(router_cfg, registry):
    kind = str(getattr(router_cfg.kind, "value", router_cfg.kind))
    if kind == "rules":
        return RulesRouter(registry.modifiers)
    if kind == "learned":
        if registry.learned_router is None:
            raise KitError(f"{str(registry.path)!r} has no learned router; expected router_learned.json from phase=modifier")
        return LearnedRouter.load(registry.learned_router, float(router_cfg.min_score))
    return NoRouter()
