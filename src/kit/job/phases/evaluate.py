"""Phase ``evaluate``: the checkpoint scored with Inspect by the configured strategy, the untrained base
on the same samples; what the job stored, measured, and what the other checkpointer would have stored."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kit.core.errors import KitError
from kit.core.wandb_logger import log_eval
from kit.eval.evaluate import EvalRequest, eval_entry, evaluate
from kit.eval.inspect_runner import load_task_specs
from kit.eval.strategies import get_strategy
from kit.job.phase import JobContext, Phase
from kit.train.export import folder_bytes
from kit.train.storage import other_checkpointer


class EvaluatePhase(Phase):
    name = "evaluate"
    what = "Inspect scores of the checkpoint (eval=<strategy>) and of the base on the same samples"

    def check(self, cfg: DictConfig, base: Path) -> None:
        strategy = get_strategy(str(cfg.eval.strategy))
        strategy.refuse_before_training(cfg, base)
        if strategy.name != "none":
            if not cfg.tasks.specs:
                raise KitError("tasks.specs is empty; expected at least one Inspect task (e.g. kit/parity)")
            load_task_specs(list(cfg.tasks.specs))

    def run(self, ctx: JobContext) -> None:
        request = EvalRequest.of(ctx.cfg)
        with ctx.record("eval", job_type="eval", timing="eval_s", announce=False) as rec:
            evaluated = evaluate(request, ctx.job.path, ctx.base, ctx.checkpoint)
            storage = {"persistent_bytes": folder_bytes(ctx.job.path), "temp_peak_bytes": evaluated.temp_peak_bytes}
            if ctx.trained is not None:  # the estimate follows the checkpoint kept (merge turns an adapter job into a full one)
                storage["estimate"] = other_checkpointer(
                    ctx.cfg, ctx.base, ctx.trained["dtype"], ctx.checkpoint.kind, ctx.trained["adapter_dtype"]
                )
            rec.update.update(
                eval=evaluated.info,
                scores=evaluated.scores,
                base_scores=evaluated.base_scores,
                evals=[*ctx.summary.evals, eval_entry(request, evaluated, "train")],
                storage=storage,
            )
            # the strategy's own time (model loads and Inspect), not the W&B run's start
            rec.timings.update(eval_s=evaluated.seconds, base_scores_s=evaluated.info.get("base_scores_seconds"))
            timings = {**ctx.summary.timings, **rec.timings}
            log_eval(rec.run, {**rec.update, "checkpoint": ctx.checkpoint.to_json(), "timings": timings})
        ctx.evaluated = evaluated


PHASE = EvaluatePhase()
