"""Phase ``merge`` (``phase.merge=true``): the training adapter merged into the base and deleted.

``<job>/merged/`` is a standalone model with its lineage in ``kit_lineage.json``, usable as a later
job's base (``model.path=<job>/merged``). A ``checkpointer=full`` job is merged by torchtune already:
its ``hf_model/`` gets the lineage.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.identity import LINEAGE, base_fingerprint, file_sha256, read_lineage
from kit.core.results import Checkpoint
from kit.core.wandb_logger import log_checkpoint_artifact
from kit.job.phase import JobContext, Phase
from kit.lora.merge import merge_to_folder
from kit.train.export import folder_bytes


class MergePhase(Phase):
    name = "merge"
    what = "merge the training adapter into the base: a standalone model (merged/) with its lineage"

    def applies(self, cfg: DictConfig) -> bool:
        return bool(cfg.phase.get("merge"))

    def run(self, ctx: JobContext) -> None:
        with ctx.record("merge", job_type="merge") as rec:  # its W&B run produces the merged model's artifact
            ctx.checkpoint = merge_training(ctx, ctx.checkpoint)
            rec.detail = f"standalone model, {ctx.checkpoint.bytes} bytes"
            rec.update["checkpoint"] = ctx.checkpoint.to_json()
            log_checkpoint_artifact(rec.run, ctx.checkpoint, ctx.base)


def merge_training(ctx: JobContext, checkpoint: Checkpoint) -> Checkpoint:
    if checkpoint.kind != "adapter":  # checkpointer=full is merged by torchtune already
        out = checkpoint.path
    else:
        adapter, out = checkpoint.path, ctx.job.output("merged")
        merge_to_folder(ctx.base, adapter, out)
        shutil.rmtree(adapter)
    dataset = Path(ctx.cfg.dataset.train_file)
    lineage = {
        "kind": "merged",
        "created": time.time(),
        "job_dir": str(ctx.job),
        "base": {"path": str(ctx.base), "fingerprint": base_fingerprint(ctx.base), "lineage": read_lineage(ctx.base)},
        "lora": OmegaConf.to_container(ctx.cfg.lora, resolve=True),
        "dataset": {"file": str(dataset), "sha256": file_sha256(dataset)},
        "fingerprint": base_fingerprint(out),
    }
    (out / LINEAGE).write_text(json.dumps(lineage, indent=2))
    return Checkpoint("full", out, folder_bytes(out), merged_from=checkpoint.kind)


PHASE = MergePhase()
