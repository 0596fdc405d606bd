"""``eval=merge``: PEFT base + adapter -> ``merge_and_unload`` -> temporary folder
-> Inspect's ``hf`` provider. The folder is removed whatever happens, Ctrl-C
included (``finally``), and its size is reported as ``temp_peak_bytes``.

The merge runs where the eval runs, in the eval's dtype (``eval.device`` /
``eval.dtype``: bf16 on the GPU, fp32 on the CPU), so the folder holds exactly
the weights Inspect will load, no fp32 CPU copy: on a GPU with a bf16 base the
temporary folder is the size of the base.

A full checkpoint is already a merged model: it is evaluated as a plain ``hf`` model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from kit.eval.context import EvalContext
from kit.eval.inspect_runner import hf_model, run_inspect
from kit.eval.strategy import Strategy
from kit.lora.merge import merge_to_folder
from kit.train.export import folder_bytes


def evaluate_folder(ctx: EvalContext, path: Path, name: str) -> dict:
    model = hf_model(path, name, ctx.eval_cfg, ctx.trust_remote_code)
    try:
        return run_inspect(model, ctx.tasks, ctx.log_dir, ctx.eval_cfg, ctx.limit)
    finally:
        model.api.close()


def evaluate(ctx: EvalContext) -> dict:
    if ctx.checkpoint_kind == "full":
        return {**evaluate_folder(ctx, ctx.checkpoint_path, "kit-full"), "temp_peak_bytes": 0}
    tmp = Path(tempfile.mkdtemp(prefix="kit-merged-", dir=ctx.tmp_root))
    try:
        start = time.perf_counter()
        cfg = ctx.eval_cfg
        change = merge_to_folder(ctx.base, ctx.checkpoint_path, tmp, cfg.device, cfg.dtype, ctx.trust_remote_code)
        merge_seconds = time.perf_counter() - start
        temp_bytes = folder_bytes(tmp)
        result = evaluate_folder(ctx, tmp, "kit-merged")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**result, "temp_peak_bytes": temp_bytes, "merge_seconds": merge_seconds, "adapter_logit_change": change}


STRATEGY = Strategy("merge", evaluate, "merge_and_unload into a temporary folder, Inspect hf provider")
