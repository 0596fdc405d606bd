"""Phase ``train``: the LoRA, trained by torchtune's own recipe (kit.train)."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig

from kit.core.data import check_lengths, read_jsonl
from kit.core.errors import KitError
from kit.core.model.families import _call, check_lora_targets, family_of, read_config, weight_files
from kit.job.phase import JobContext, Phase
from kit.train.run import loss_line, train


class TrainPhase(Phase):
    name = "train"
    what = "train the LoRA with torchtune's lora_finetune_single_device (or _distributed under torchrun)"

    def check(self, cfg: DictConfig, base: Path) -> None:
        check_trainable(cfg, base)
        check_dataset(cfg.dataset.train_file, (cfg.dataset.prompt_column, cfg.dataset.response_column), base)

    def run(self, ctx: JobContext) -> None:
        with ctx.record("train", job_type="train") as rec:
            trained = train(ctx.cfg, ctx.base, ctx.job, Path(ctx.cfg.dataset.train_file), rec.run)
            rec.detail = loss_line(trained)
            rec.update["train"] = {k: v for k, v in trained.items() if k != "epoch_dir"}
            rec.timings["train_s"] = trained["seconds"]  # the recipe's own time, without the W&B run's start
        ctx.trained = trained


def check_trainable(cfg: DictConfig, base: Path) -> None:
    """torchtune can train a LoRA of ``cfg.lora`` on this base: a supported family with its tokenizer
    files, LoRA targets the family allows, weight files kit may load."""
    from kit.core.model.qlora import nf4_settings  # imports torch: only when a job is checked

    family_of(base).tokenizer_section(base, None)
    check_lora_targets(cfg.lora, base)
    weight_files(base, cfg.model.allow_pickle)
    nproc = int(cfg.trainer.nproc_per_node)
    if nproc > 1 and nf4_settings(base) is not None:  # kit's QLoRA model and its check: single device only
        raise KitError(
            f"trainer.nproc_per_node={nproc} on the nf4 base {str(base)!r}: QLoRA trains on one device here; "
            "expected trainer.nproc_per_node=1"
        )


def check_dataset(path: str, columns: tuple[str, str], base: Path) -> int:
    """Types and UTF-8 of every row, then every row's length in tokens against the model's context,
    tokenized as torchtune's instruct dataset does (once per file, base and columns per process)."""
    read_jsonl(path, columns)
    stat = Path(path).stat()
    return longest_row(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, columns, str(base))


@functools.lru_cache(maxsize=16)
def longest_row(path: str, size: int, mtime_ns: int, columns: tuple[str, str], base: str) -> int:
    from torchtune.data import InputOutputToMessages

    section = dict(family_of(Path(base)).tokenizer_section(Path(base), None))
    tokenizer = _call(section.pop("_component_"), **section)
    to_messages = InputOutputToMessages(train_on_input=False, column_map={"input": columns[0], "output": columns[1]})
    max_len = int(read_config(Path(base)).get("max_position_embeddings") or 0)

    def count(row: dict) -> int:
        return len(tokenizer.tokenize_messages(to_messages(row)["messages"])[0])

    return check_lengths(path, columns, count, max_len) if max_len else 0


PHASE = TrainPhase()
