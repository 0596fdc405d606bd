"""Compose the config for every sweep point before Hydra runs any job, and turn
Hydra/OmegaConf errors into one line that names the bad value."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.data import check_lengths, read_jsonl
from kit.core.errors import KitError
from kit.core.log import get as get_logger
from kit.core.model.families import _call, check_lora_targets, family_of, read_config, weight_files
from kit.core.model.resolve import resolve_base
from kit.eval.inspect_runner import load_task_specs
from kit.eval.strategies import get_strategy
from kit.eval.strategies.vllm import real_vllm
from kit.eval.vllm_lora import refusal, unservable_from_config
from kit.job.phases import check as check_phase

log = get_logger(__name__)


# Values the schema types but cannot bound: (lowest, highest, lowest allowed itself?). None: unbounded.
# Checked for every sweep point, so ``-m lora.rank=8,-1`` fails before job 0 trains.
RANGES = {
    "lora.rank": (1, None, True),
    "lora.alpha": (0, None, False),
    "lora.dropout": (0, 1, True),
    "trainer.epochs": (1, None, True),
    "trainer.max_steps_per_epoch": (1, None, True),
    "trainer.batch_size": (1, None, True),
    "trainer.gradient_accumulation_steps": (1, None, True),
    "trainer.lr": (0, None, False),
    "trainer.weight_decay": (0, None, True),
    "trainer.warmup_steps": (0, None, True),
    "trainer.clip_grad_norm": (0, None, False),
    "trainer.nproc_per_node": (1, None, True),
    "eval.batch_size": (1, None, True),
    "eval.max_tokens": (1, None, True),
    "eval.temperature": (0, None, True),
    "eval.max_adapters": (1, None, True),
    "tasks.limit": (1, None, True),
    "verify.probes": (1, None, True),
    "verify.max_new_tokens": (1, None, True),
    "verify.limit": (1, None, True),
    "verify.rounds": (1, None, True),
    "verify.rounding_factor": (1, None, True),
}


# A modifier's own rank and budget (None: the job's) have the bounds of the keys they stand in for
MODIFIER_RANGES = {"rank": RANGES["lora.rank"], "epochs": RANGES["trainer.epochs"], "lr": RANGES["trainer.lr"]}


def range_error(key: str, value, low, high, low_ok: bool) -> KitError | None:
    """The one-line error for ``key=value`` outside (low, high), else None (None: "not set", passes)."""
    if value is None:
        return None
    too_low = value < low or (value == low and not low_ok)
    if not too_low and (high is None or value < high):
        return None
    lower = f">= {low}" if low_ok else f"> {low}"
    expected = lower if high is None else f"{lower} and < {high}"
    return KitError(f"{key}={value} is out of range; expected a number {expected}")


def check_ranges(cfg: DictConfig) -> None:
    """One line for the first value out of range (a None means "not set" and passes)."""
    checks = [(key, OmegaConf.select(cfg, key), bounds) for key, bounds in RANGES.items()]
    for name, spec in (cfg.phase.modifiers or {}).items():
        checks += [(f"phase.modifiers.{name}.{key}", spec[key], bounds) for key, bounds in MODIFIER_RANGES.items()]
    for key, value, bounds in checks:
        if (error := range_error(key, value, *bounds)) is not None:
            raise error


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


def check_vllm_lora(cfg: DictConfig, base: Path) -> None:
    """eval=vllm (the real server): refuse, before any training, a LoRA that vLLM will not
    serve (kit's default trains the output projection). ``eval=auto`` needs no refusal:
    it does not pick vLLM for such an adapter and records why."""
    if cfg.eval.strategy != "vllm" or not real_vllm(cfg.eval) or cfg.phase.name != "training":
        return
    if str(getattr(cfg.checkpointer.kind, "value", cfg.checkpointer.kind)) == "full" or cfg.phase.merge:
        return  # a merged model: vLLM serves it without LoRA
    bad = unservable_from_config(cfg.lora)
    if bad:
        raise KitError(refusal(bad[0], family_of(base).name))


def check_inputs(cfg: DictConfig) -> dict:
    """Check every input before any work: one clear error, nothing written."""

    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise KitError(f"missing required config value(s) {sorted(missing)}; set them on the command line")
    check_ranges(cfg)
    base = resolve_base(cfg.model)
    family_of(base).tokenizer_section(base, None)  # supported family, tokenizer files present
    check_lora_targets(cfg.lora, base)
    weight_files(base, cfg.model.allow_pickle)
    check_dataset(cfg.dataset.train_file, (cfg.dataset.prompt_column, cfg.dataset.response_column), base)
    get_strategy(cfg.eval.strategy)
    check_vllm_lora(cfg, base)
    check_phase(cfg)
    if cfg.eval.strategy != "none" and cfg.phase.name == "training":
        if not cfg.tasks.specs:
            raise KitError("tasks.specs is empty; expected at least one Inspect task (e.g. kit/parity)")
        load_task_specs(list(cfg.tasks.specs))
    return {"base": base}
