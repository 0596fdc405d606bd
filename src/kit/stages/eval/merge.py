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

from kit.core.device import resolve_device, resolve_dtype
from kit.core.loader import load_model, load_tokenizer
from kit.stages.eval.checks import changed_by, logits, probe_ids
from kit.stages.eval.context import EvalContext
from kit.stages.export import folder_bytes
from kit.stages.inspect_runner import hf_model, run_inspect
from kit.stages.resident import check_fits, read_adapter


def merge_to_folder(
    base: Path, adapter: Path, out: Path, device: str = "cpu", dtype: str = "fp32", trust_remote_code: bool = False
) -> float:
    """Merge ``adapter`` into ``base`` on ``device`` in ``dtype`` and save the merged model to
    ``out`` in that dtype (``auto``: cuda / bf16 when there is a GPU); the defaults are
    ``phase.merge``'s standalone fp32 model, eval passes its own. Returns the largest logit
    change the adapter makes on the probes (a KitError when it changes nothing, before or
    after the merge)."""
    from peft import PeftModel

    _, shapes = read_adapter(adapter)  # one-line errors naming the bad file, before any work
    device = resolve_device(device)
    model = load_model(base, dtype=resolve_dtype(dtype, device), device=device, trust_remote_code=trust_remote_code)
    check_fits(shapes, model, adapter / "adapter_model.safetensors")
    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    ids, device = probe_ids(tokenizer), next(model.parameters()).device
    before = logits(model, ids, device)
    model = PeftModel.from_pretrained(model, adapter)
    change = changed_by(adapter, before, logits(model, ids, device), "merge")
    model = model.merge_and_unload()
    changed_by(adapter, before, logits(model, ids, device), "merge (merged weights)")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return change


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
