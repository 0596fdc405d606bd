"""Compose the config for every sweep point before Hydra runs any job, and turn
Hydra/OmegaConf errors into one line that names the bad value."""

from __future__ import annotations

import itertools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kit.core.base_model import resolve_base
from kit.core.config import compose, one_line
from kit.core.data import read_jsonl
from kit.core.errors import KitError
from kit.core.jobdir import is_done, set_aside
from kit.core.models import family_of, weight_files
from kit.stages.eval import get_strategy
from kit.stages.eval.vllm import real_vllm
from kit.stages.eval.vllm_lora import refusal, unservable_from_config
from kit.stages.inspect_runner import load_task_specs
from kit.stages.phases import check as check_phase

MAX_POINTS = 256
HYDRA_FLAGS = ("-m", "--multirun", "--info", "--cfg", "-c", "--resolve", "--hydra-help", "--help", "-h")


def split_args(args: list[str]) -> tuple[list[str], bool]:
    overrides = [a for a in args if not a.startswith("-")]
    multirun = "-m" in args or "--multirun" in args
    return overrides, multirun


def expand(overrides: list[str], sweep_params: dict) -> list[list[str]]:
    """Every combination of sweep values, as plain overrides (Hydra's basic sweeper order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = overrides + [f"{k}={v}" for k, v in sweep_params.items()
                         if not any(o.split("=")[0].lstrip("+~") == k for o in overrides)]
    choices = []
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        values = [o.get_value_element_as_str()] if not o.is_sweep_override() else [
            str(v) for v in o.sweep_string_iterator()]
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
    from omegaconf import OmegaConf



    overrides, multirun = split_args(args)
    plain = [o for o in overrides if not o.startswith("hydra")]
    try:
        first = compose(config_name, fixed_overrides(overrides), hydra_cfg=True)
        if not multirun:
            run_dir = Path(first.hydra.run.dir)
            if is_done(run_dir):
                return run_dir
        sweep = dict(first.hydra.sweeper.params or {}) if multirun else {}
        points = expand(plain, sweep) if multirun else [plain]
        for point in points:
            cfg = compose(config_name, point)
            OmegaConf.resolve(cfg)
            check_inputs(cfg)  # model folder, dataset file, tasks: before any job dir exists
    except KitError:
        raise
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise KitError(one_line(e)) from None
    moved = None if multirun else set_aside(run_dir)
    if moved:
        print(f"kit: unfinished attempt in {run_dir} moved to {moved}; running it again")
    return None


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
    base = resolve_base(cfg.model)
    family_of(base).tokenizer_section(base, None)  # supported family, tokenizer files present
    weight_files(base, cfg.model.allow_pickle)
    read_jsonl(cfg.dataset.train_file, (cfg.dataset.prompt_column, cfg.dataset.response_column))
    get_strategy(cfg.eval.strategy)
    check_vllm_lora(cfg, base)
    check_phase(cfg)
    if cfg.eval.strategy != "none" and cfg.phase.name == "training":
        if not cfg.tasks.specs:
            raise KitError("tasks.specs is empty; expected at least one Inspect task (e.g. kit/parity)")
        load_task_specs(list(cfg.tasks.specs))
    return {"base": base}
