"""Phase ``serve`` (``phase=lifecycle``): the modifiers this job trained, served by ``kit serve`` in
process (kit.runtime.serve.local: the real HTTP API on a free loopback port, a one-time key) over the
base they were trained on, and asked through the real ``openai`` client. Each modifier gets the first
held-out question of its own task (the task it gained most on over the base; with no gain, the task
named as it, else its first) by name, and each task's
question goes once more as ``model=auto`` (the router picks). ``summary.json``'s ``served`` block holds
every request: the modifier that answered (the server's ``X-Kit-Modifier``), the answer, the target,
whether they match (stripped, case-folded), and the seconds it took.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from kit.core.errors import KitError
from kit.eval.inspect_runner import first_samples
from kit.job.phase import JobContext, Phase
from kit.runtime.registry import read_registry

MAX_TOKENS = 16  # the bundled tasks' answers are a word or a few digits


class ServePhase(Phase):
    name = "serve"
    what = "serve the job's modifiers in process and ask each one its own task's first held-out question"

    def check(self, cfg: DictConfig, base) -> None:
        if not cfg.phase.modifiers:
            raise KitError("phase.pipeline runs serve without phase.modifiers; expected modifiers to serve")

    def run(self, ctx: JobContext) -> None:
        from kit.runtime.serve.local import serving

        records = [m.record for m in read_registry(ctx.job.path).modifiers]
        own = {r["name"]: own_task(r) for r in records}
        questions = {spec: first_samples(spec)[0] for spec in dict.fromkeys(t for r in records for t in r["tasks"])}
        with ctx.record("serve", timing="serve_s") as rec:
            with serving(ctx.cfg.serve, ctx.cfg.router, ctx.job.path) as local:
                import openai

                client = openai.OpenAI(base_url=local.url, api_key=local.key, max_retries=0, timeout=300)
                asked = [ask(client, name, task, questions[task]) for name, task in own.items() if task]
                asked += [ask(client, "auto", task, q) for task, q in questions.items()]
            right = sum(a["correct"] for a in asked)
            rec.update["served"] = {"requests": asked, "correct": right, "total": len(asked)}
            rec.detail = f"{right}/{len(asked)} served answers right ({len(own)} modifier(s) by name, {len(questions)} routed)"


def own_task(record: dict) -> str | None:
    """The task (its spec) a modifier gained most on over the base; scores are {task name: {metric: value}}."""
    gains = {}
    for spec in record["tasks"]:
        key = score_key(spec)
        if key in record["scores"]:
            gains[spec] = first_metric(record["scores"][key]) - first_metric(record["base_scores"].get(key, {}))
    if gains and max(gains.values()) > 0:
        return max(gains, key=gains.get)
    named = [spec for spec in record["tasks"] if score_key(spec) == record["name"]]  # no gain: the task named as it
    return (named or record["tasks"] or [None])[0]


def score_key(spec: str) -> str:
    """The name a task's scores are kept under (Inspect's task name without its package: kit/parity -> parity)."""
    return spec.rsplit("@", 1)[-1].rsplit("/", 1)[-1].removesuffix(".py")


def first_metric(metrics: dict) -> float:
    return float(next(iter(metrics.values()), 0.0)) if metrics else 0.0


def ask(client, model: str, task: str, question: tuple[str, str]) -> dict:
    text, target = question
    start = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS, temperature=0.0
    )
    answer = raw.parse().choices[0].message.content or ""
    return {
        "model": model,
        "answered_by": raw.headers.get("x-kit-modifier"),
        "task": task,
        "input": text,
        "target": target,
        "answer": answer,
        "correct": answer.strip().casefold() == target.strip().casefold(),
        "seconds": round(time.perf_counter() - start, 4),
    }


PHASE = ServePhase()
