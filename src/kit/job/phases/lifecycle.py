"""Phase ``lifecycle`` (``phase=lifecycle``, last): one table of a LoRA's whole life in this job.

The job before it trained a training adapter and merged it away (``merged/``), compressed the merged
model (``compressed/``, and ``dequantized/`` its exact weights), trained runtime modifiers over the
compressed base (``modifiers/``) and served them (phase ``serve``). Each row is one step: what it
stored, its bytes on disk (and zstd'd for the compressed base), its score on its tasks and the score
of the step it builds on, on the same samples, and the bytes the same step would store at the scale of
``phase.lifecycle.project_to`` (kit.core.model.projection: measured bytes per weight x that model's
weights). Written to ``summary.json`` (``lifecycle``), ``<job>/lifecycle.md`` and the job's output.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kit.core.errors import KitError
from kit.core.model.compress import folder_bytes
from kit.job.phase import JobContext, Phase

NEEDS = ("train", "export", "merge", "evaluate", "compress", "modifiers", "serve")
TABLE = "lifecycle.md"
WEIGHT_FILES = "*.safetensors"  # a model folder's weights: what the table counts as its bytes


class LifecyclePhase(Phase):
    name = "lifecycle"
    what = "one table of the job's steps: bytes (and at 8B), scores against the step before"

    def check(self, cfg: DictConfig, base: Path) -> None:
        missing = [p for p in NEEDS if p not in cfg.phase.pipeline]
        if missing:
            raise KitError(f"phase.pipeline={list(cfg.phase.pipeline)} lacks {missing}; the lifecycle table needs {list(NEEDS)}")
        if not cfg.phase.merge:
            raise KitError("phase=lifecycle needs phase.merge=true: it compresses the merged model")
        if not cfg.phase.compress.dequantized:
            raise KitError("phase=lifecycle needs phase.compress.dequantized=true: its modifiers train over dequant(Wq)")
        target = cfg.phase.lifecycle.project_to
        if target and not (Path(target) / "config.json").is_file():
            raise KitError(f"phase.lifecycle.project_to={target!r} has no config.json; expected a model folder or null")

    def run(self, ctx: JobContext) -> None:
        with ctx.record("lifecycle") as rec:
            rows = steps(ctx)
            target = ctx.cfg.phase.lifecycle.project_to
            projected_to = project(rows, ctx, Path(target)) if target else None
            rec.update["lifecycle"] = {"steps": rows, "projected_to": projected_to}
            table = markdown(rows, projected_to)
            (ctx.job.output(TABLE)).write_text(table + "\n")
            rec.detail = f"{len(rows)} steps, table in {ctx.job / TABLE}"
        print(table, flush=True)


def steps(ctx: JobContext) -> list[dict]:
    """The table's rows, from what the phases before recorded (summary.json) and stored (the job dir)."""
    s = ctx.summary
    base = Path(s.base_model)
    trained, before = ctx.evaluated.scores, ctx.evaluated.base_scores
    compressed_base = compressed_scores(s.modifiers or {})
    rows = [
        {"step": "base", "stored": str(base), "bytes": folder_bytes(base, WEIGHT_FILES), "scores": before},
        {
            "step": "trained + merged",
            "stored": "merged/",
            "bytes": folder_bytes(ctx.job / "merged", WEIGHT_FILES),
            "scores": trained,
            "before": before,
            "verify": (s.verify or {}).get("passed"),
        },
    ]
    c = s.compress
    rows.append(
        {
            "step": f"compressed ({c['format']})",
            "stored": "compressed/",
            "bytes": c["bytes"],
            "zstd_bytes": c.get("zstd_bytes"),
            "scores": {t: m for t, m in compressed_base.items() if t in trained},
            "before": trained,
            "kl": c.get("kl"),
            "ppl": [c.get("ppl_source"), c.get("ppl_compressed")],
        }
    )
    served = {r["model"]: r for r in (s.served or {}).get("requests", []) if r["model"] != "auto"}
    for name, m in (s.modifiers or {}).items():
        rows.append(
            {
                "step": f"modifier {name}",
                "stored": f"{m['path']}/",
                "bytes": m["bytes"],
                "scores": m["scores"],
                "before": {t: compressed_base.get(t, {}) for t in m["scores"]},
                "served": served.get(name),
            }
        )
    add_paired(rows, ctx)
    routed = [r for r in (s.served or {}).get("requests", []) if r["model"] == "auto"]
    if routed:
        rows.append({"step": "served (model=auto)", "stored": "", "bytes": None, "scores": None, "routed": routed})
    return rows


def step_logs(ctx: JobContext) -> list[list[str]]:
    """Each row's Inspect logs (per-sample scores), in row order: base, merged, compressed, modifiers."""
    trained = ctx.evaluated.info
    modifiers = [ctx.notes["modifier_logs"][name] for name in ctx.summary.modifiers or {}]
    # every modifier scored the compressed base on the same samples: the first one's base logs
    return [
        list(trained.get("base_logs") or []),
        list(trained.get("logs") or []),
        list(modifiers[0]["base_logs"]) if modifiers else [],
        *[list(m["logs"]) for m in modifiers],
    ]


def add_paired(rows: list[dict], ctx: JobContext) -> None:
    """``paired``: per task, the row against the step before on their shared samples (McNemar's exact
    test on exact-match scores, kit.core.significance); base vs merged, merged vs compressed, compressed
    base vs each modifier."""
    from kit.core.significance import compare
    from kit.eval.samples import sample_scores

    scores = [sample_scores(logs) for logs in step_logs(ctx)]
    before = [None, 0, 1, *[2] * (len(scores) - 3)]
    for row, mine, prior in zip(rows, scores, before):
        if prior is None:
            continue
        tests = {k: compare(v, scores[prior][k]) for k, v in mine.items() if k in scores[prior]}
        row["paired"] = {k: {"test": t.test, "n": t.n, "diff": t.diff, "p": t.p} for k, t in tests.items() if t}


def compressed_scores(modifiers: dict) -> dict:
    """The compressed base's scores per task: every modifier's eval scored it on the same samples."""
    out = {}
    for m in modifiers.values():
        for task, metrics in m["base_scores"].items():
            out.setdefault(task, metrics)
    return out


def project(rows: list[dict], ctx: JobContext, target: Path) -> dict:
    """Each row's bytes at the target's scale (kit.core.model.projection)."""
    from kit.core.model.loader import meta_model
    from kit.core.model.projection import (
        adapter_targets,
        bytes_per_lora_weight,
        bytes_per_quantized_weight,
        compressed_bytes,
        lora_weights,
        parameters,
        target_dtype_bytes,
    )

    model = meta_model(target)
    full = parameters(model) * target_dtype_bytes(model)
    c, settings = ctx.summary.compress, ctx.cfg.phase.compress
    per_q = bytes_per_quantized_weight(Path(c["path"]), ctx.job / "merged")
    fmt_bytes = compressed_bytes(model, c["format"], int(settings.nf4_block_size), int(settings.nf4_scaler_block_size), per_q)
    rows[0]["projected_bytes"] = rows[1]["projected_bytes"] = full
    rows[2]["projected_bytes"] = fmt_bytes
    for row, m in zip(rows[3:], (ctx.summary.modifiers or {}).values()):
        adapter = ctx.job / m["path"]
        targets, rank = adapter_targets(adapter)
        row["projected_bytes"] = int(lora_weights(model, targets, rank) * bytes_per_lora_weight(adapter)[0])
    return {
        "path": str(target),
        "model_type": model.config.model_type,
        "parameters": parameters(model),
        "dtype_bytes": target_dtype_bytes(model),
        "bytes_per_quantized_weight": per_q,
    }


def score_text(scores: dict | None) -> str:
    if not scores:
        return ""
    return ", ".join(f"{task} {next(iter(m.values())):.2f}" for task, m in scores.items() if m)


def size(n: int | None) -> str:
    if n is None:
        return ""
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def paired_text(paired: dict | None) -> str:
    from kit.core.significance import format_p

    return ", ".join(f"{task} {t['diff']:+.2f} p={format_p(t['p'])}" for task, t in (paired or {}).items())


def served_text(q: dict) -> str:
    task = f"{q['task'].rsplit('/', 1)[-1]} -> " if q["model"] == "auto" else ""
    return f"{task}{q['answered_by']}: {q['answer']!r} ({'right' if q['correct'] else 'wrong'})"


def markdown(rows: list[dict], projected_to: dict | None) -> str:
    at = f"at {projected_to['parameters'] / 1e9:.2f} B parameters" if projected_to else "projected"
    lines = [
        f"| step | stored | bytes | zstd'd | scores | the step before, same samples | paired p | served | {at} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        answer = "; ".join(served_text(q) for q in ([r["served"]] if r.get("served") else r.get("routed", [])))
        extra = f"; KL {r['kl']:.3g}" if r.get("kl") is not None else ""
        lines.append(
            f"| {r['step']} | {r['stored']} | {size(r['bytes'])} | {size(r.get('zstd_bytes'))} | "
            f"{score_text(r['scores'])}{extra} | {score_text(r.get('before'))} | {paired_text(r.get('paired'))} | "
            f"{answer} | {size(r.get('projected_bytes'))} |"
        )
    return "\n".join(lines)


PHASE = LifecyclePhase()
