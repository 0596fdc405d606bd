"""Compose the config for every sweep point before Hydra runs any job, and turn
Hydra/OmegaConf errors into one line that names the bad value."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shutil
import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.base_model import resolve_base
from kit.core.config import compose, conf_dir, one_line
from kit.core.data import check_lengths, read_jsonl
from kit.core.errors import KitError
from kit.core.jobdir import is_done, set_aside
from kit.core.locks import hold
from kit.core.log import get as get_logger
from kit.core.models import _call, check_lora_targets, family_of, read_config, weight_files
from kit.stages.eval import get_strategy
from kit.stages.eval.vllm import real_vllm
from kit.stages.eval.vllm_lora import refusal, unservable_from_config
from kit.stages.inspect_runner import load_task_specs
from kit.stages.phases import check as check_phase

MAX_POINTS = 256
HYDRA_FLAGS = ("-m", "--multirun", "--info", "--cfg", "-c", "--resolve", "--hydra-help", "--help", "-h")
# Hydra's flags that take the next argument as their value (``--cfg job``); --info's is optional
VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
SHOW_ONLY = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help"}  # Hydra prints and exits: no job runs
SLURM_LAUNCHERS = ("SlurmLauncher",)  # launcher classes that submit with sbatch
SLURM_TIMEOUT_S = 30

log = get_logger(__name__)


def split_args(args: list[str]) -> tuple[list[str], bool]:
    """(overrides, multirun) from the arguments of ``kit train``: Hydra's flags and their values dropped."""
    overrides, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in VALUE_FLAGS or (a in ("--info", "-i") and i + 1 < len(args) and args[i + 1] in INFO_TOPICS)
        else:
            overrides.append(a)
    multirun = "-m" in args or "--multirun" in args
    return overrides, multirun


def show_only(args: list[str]) -> bool:
    """Hydra only prints (``--cfg job``, ``--info``, ``--help``): no job dir is touched."""
    return any(a.partition("=")[0] in SHOW_ONLY for a in args)


def expand(overrides: list[str], sweep_params: dict) -> list[list[str]]:
    """Every combination of sweep values, as plain overrides (Hydra's basic sweeper order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = overrides + [
        f"{k}={v}" for k, v in sweep_params.items() if not any(o.split("=")[0].lstrip("+~") == k for o in overrides)
    ]
    choices = []
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        values = [o.get_value_element_as_str()] if not o.is_sweep_override() else [str(v) for v in o.sweep_string_iterator()]
        choices.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.islice(itertools.product(*choices), MAX_POINTS)]


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides without sweeps (``a=1,2``), for composing the Hydra config itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [line for line, o in zip(overrides, parsed) if not o.is_sweep_override()]


def check_overrides(config_name: str, args: list[str]) -> Path | None:
    """Compose (and check the inputs of) every sweep point; raise KitError if any is bad.

    Returns the run dir when a single run targets a job dir that already finished:
    Hydra would rewrite its ``.hydra/`` files, so the caller must not start Hydra.
    A single run into a dir with an unfinished attempt moves that attempt to
    ``<dir>/attempts/<n>/`` first (sweeps do this in kit.stages.launcher).
    """
    overrides, multirun = split_args(args)
    plain = [o for o in overrides if not o.startswith("hydra")]
    printing = show_only(args)
    try:
        first = compose(config_name, fixed_overrides(overrides), hydra_cfg=True)
        if multirun and not printing:
            check_launcher(first.hydra.launcher)
        if not multirun and not printing:
            run_dir = Path(first.hydra.run.dir)
            if is_done(run_dir):
                return run_dir
        sweep = dict(first.hydra.sweeper.params or {}) if multirun else {}
        points = expand(plain, sweep) if multirun else [plain]
        for point in points:
            cfg = compose(config_name, point)
            check_added_keys(cfg, point)
            OmegaConf.resolve(cfg)
            check_inputs(cfg)  # model folder, dataset file, tasks: before any job dir exists
    except KitError:
        raise
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise KitError(one_line(e)) from None
    # One writer per dir: taken here, before Hydra writes into it, when the dir exists already
    # (a fresh timestamped dir is locked by the job / the launcher as soon as it exists).
    target = Path(str(first.hydra.sweep.dir if multirun else first.hydra.run.dir))
    if target.is_dir() and not printing:
        hold(target, "sweep dir" if multirun else "job dir")
    moved = None if multirun or printing else set_aside(run_dir)
    if moved:
        log.info("unfinished attempt in %s moved to %s; running it again", run_dir, moved)
    return None


def check_launcher(launcher_cfg) -> None:
    """A SLURM launcher needs a SLURM cluster that answers here: say so before Hydra makes the sweep dir."""
    name = str(launcher_cfg.get("_target_", "")).rpartition(".")[2]
    if name not in SLURM_LAUNCHERS:
        return
    other = "expected a SLURM cluster here, or hydra/launcher=basic|submitit_local"
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise KitError(f"hydra/launcher uses SLURM ({name}) but 'sbatch'/'sinfo' are not on PATH; {other}")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KitError(f"hydra/launcher uses SLURM ({name}) but 'sinfo' got no answer in {SLURM_TIMEOUT_S} s; {other}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise KitError(f"hydra/launcher uses SLURM ({name}) but the cluster does not answer (sinfo: {why}); {other}")


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """``+a.b=v`` / ``++a.b=v`` add keys past the structured schema (Hydra opens it for them);
    refuse a key the schema of its parent does not know (a typo such as ``+lora.rnk=8``)."""
    for line in overrides:
        if not line.startswith("+"):
            continue
        key = line.lstrip("+").partition("=")[0]
        parent_key, _, leaf = key.rpartition(".")
        if "@" in key or (conf_dir() / key.replace(".", "/")).is_dir():  # a config group (+experiment=...)
            continue
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
        if schema is None or not dataclasses.is_dataclass(schema):
            continue  # a free-form mapping (e.g. phase.modifiers): any key is fine
        known = [f.name for f in dataclasses.fields(schema)]
        if leaf not in known:
            raise KitError(
                f"unknown key {key!r} in {line!r}: {parent_key or 'the config'} has no key {leaf!r}; expected one of {known}"
            )


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
