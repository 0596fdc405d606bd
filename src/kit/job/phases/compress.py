"""Phase ``compress`` (``phase=compress``): the base quantized into ``<job>/compressed/`` and measured.

The source is the model this job holds so far: a standalone model an earlier phase of the same job
stored (``merged/`` in ``phase=lifecycle``), else the base (``model.path``: a ``phase.merge=true`` job's
``merged/`` or any model folder). With ``phase.compress.dequantized`` the later phases of the job build on
``<job>/dequantized`` (exactly the compressed weights). The compressed folder's manifest
(``kit_compress.json``) names its source, format, block size and content hash; ``summary.json``'s
``compress`` block holds bytes (and zstd'd), load time, and next-token KL and perplexity of the
compressed model (over exactly its dequantized weights) against the source.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kit.core.data import read_jsonl
from kit.core.errors import KitError
from kit.core.model.compress import WEIGHTS, check_format, compress_folder, write_dequantized, zstd_bytes
from kit.job.phase import JobContext, Phase


class CompressPhase(Phase):
    name = "compress"
    what = "quantize the base (nf4, int8, gguf_q8_0, gguf_q4_0) into compressed/ and measure KL, perplexity, bytes"

    def check(self, cfg: DictConfig, base: Path) -> None:
        settings = cfg.phase.compress
        check_format(str(settings.format))
        if settings.heldout_rows and not Path(settings.heldout_file).is_file():
            raise KitError(f"phase.compress.heldout_file={settings.heldout_file!r} does not exist; expected a JSON-lines file")

    def run(self, ctx: JobContext) -> None:
        settings = ctx.cfg.phase.compress
        source = compress_source(ctx)
        with ctx.record("compress") as rec:
            out = ctx.job.output("compressed")
            manifest = compress_folder(
                source, out, str(settings.format), int(settings.nf4_block_size), int(settings.nf4_scaler_block_size)
            )
            block = {k: manifest[k] for k in ("format", "method", "block_size", "sha256", "bytes", "compress_s")}
            block |= {"path": str(out), "source": manifest["source"], "zstd_bytes": zstd_bytes(out / WEIGHTS)}
            block["ratio"] = manifest["source"]["bytes"] / manifest["bytes"]
            block |= measure(ctx, source, out, settings)
            if settings.dequantized:
                block["dequantized"] = str(write_dequantized(out, ctx.job.output("dequantized")))
            rec.update["compress"] = block
            rec.detail = compress_line(block)
        if settings.dequantized:  # what a modifier phase after this one trains and is scored over
            ctx.base = Path(block["dequantized"])


def compress_source(ctx: JobContext) -> Path:
    """A standalone model this job stored (merged, or a full checkpoint), else the job's base."""
    if ctx.checkpoint is not None and ctx.checkpoint.kind == "full":
        return ctx.checkpoint.path
    return ctx.base


def measure(ctx: JobContext, source: Path, out: Path, settings) -> dict:
    """KL and perplexity against the source on held-out rows, and the compressed model's load time."""
    from kit.core.model.compress_quality import kl_and_perplexity, timed_load
    from kit.core.model.loader import load_model, load_tokenizer

    compressed, load_s = timed_load(out)
    if not settings.heldout_rows:
        return {"load_s": load_s}
    ds = ctx.cfg.dataset
    rows = read_jsonl(settings.heldout_file, (ds.prompt_column, ds.response_column))[: int(settings.heldout_rows)]
    texts = [f"{r[ds.prompt_column]} {r[ds.response_column]}" for r in rows]
    quality = kl_and_perplexity(load_model(source, dtype="float32", device="cpu"), compressed, load_tokenizer(source), texts)
    return {"load_s": load_s, **quality, "heldout": {"file": str(settings.heldout_file), "rows": len(rows)}}


def compress_line(block: dict) -> str:
    line = f"{block['format']}, {block['bytes']} bytes ({block['ratio']:.2f}x smaller)"
    if "kl" in block:
        line += f", KL {block['kl']:.4g}, ppl {block['ppl_source']:.3f} -> {block['ppl_compressed']:.3f}"
    return line


PHASE = CompressPhase()
