"""Phase ``export``: torchtune's epoch output becomes the job's checkpoint (``adapter/`` or ``hf_model/``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from kit.core.identity import adapter_hash
from kit.core.wandb_logger import log_checkpoint_artifact
from kit.job.phase import JobContext, Phase
from kit.train.export import export
from kit.train.recipe_config import SCRATCH
from kit.verify.reference import keep_torchtune_adapter


class ExportPhase(Phase):
    name = "export"
    what = "the checkpoint in PEFT (adapter/) or HF (hf_model/) format, its content hash, the training adapter kept for verify"

    def run(self, ctx: JobContext) -> None:
        kind = str(getattr(ctx.cfg.checkpointer.kind, "value", ctx.cfg.checkpointer.kind))
        epoch_dir = Path(ctx.trained["epoch_dir"])
        # its W&B run produces the checkpoint's artifact (base as input); a job that merges logs the
        # merged model instead (the adapter is deleted then, and an adapter artifact uploads its files)
        merging = bool(ctx.cfg.phase.get("merge"))
        with ctx.record("export", job_type=None if merging else "export") as rec:
            checkpoint = export(kind, epoch_dir, ctx.job, ctx.base)
            keep_torchtune_adapter(epoch_dir, ctx.job)  # the training model, for verify
            shutil.rmtree(ctx.job / SCRATCH)  # torchtune's per-epoch copies; the export persists
            if checkpoint.kind == "adapter":  # its identity: kit eval / verify refuse it once changed
                checkpoint = checkpoint.replace(content_hash=adapter_hash(checkpoint.path))
            rec.detail = f"{checkpoint.kind} checkpoint, {checkpoint.bytes} bytes"
            rec.update["checkpoint"] = checkpoint.to_json()
            log_checkpoint_artifact(rec.run, checkpoint, ctx.base)
        ctx.checkpoint = checkpoint


PHASE = ExportPhase()
