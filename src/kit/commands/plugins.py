"""``python -m kit plugins [--json]``: every checkpointer, eval strategy, launcher,
logger and loader, and whether it can run here; if not, what is missing.

Each check is real and cheap: a module that can be imported (found, not
imported), an executable on PATH, a visible CUDA device.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from typing import Callable

from kit.core.cli_parser import OneLineParser
from kit.stages.eval import STRATEGIES

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
SUBMITIT = (module("submitit"), module("hydra_plugins.hydra_submitit_launcher"))

# group -> name -> (what it is, requirements)
PLUGINS: dict[str, dict[str, tuple[str, tuple[Check, ...]]]] = {
    "checkpointer": {
        "adapter": ("PEFT adapter only (adapter/)", (TORCHTUNE, PEFT)),
        "full": ("merged HF model (hf_model/)", (TORCHTUNE,)),
    },
    "launcher": {
        "basic": ("Hydra's own, jobs one after another in this process", ()),
        "submitit_local": ("submitit processes on this machine", SUBMITIT),
        "submitit_slurm": ("submitit jobs on SLURM", (*SUBMITIT, executable("sbatch"))),
    },
    "logger": {
        "wandb": ("W&B runs (offline by default)", (module("wandb"),)),
        "none": ("no logging beyond summary.json", ()),
    },
    "loader": {
        "causal_lm": ("decoder-only LMs (AutoModelForCausalLM)", (module("transformers"),)),
        "seq2seq_lm": ("encoder-decoder LMs (AutoModelForSeq2SeqLM)", (module("transformers"),)),
        "masked_lm": ("masked LMs (AutoModelForMaskedLM)", (module("transformers"),)),
        "quantized": ("load_in_4bit / load_in_8bit", (module("bitsandbytes"), cuda)),
    },
}

# eval strategies come from kit.stages.eval.STRATEGIES; what each one needs beyond its module
EVAL_NEEDS: dict[str, tuple[str, tuple[Check, ...]]] = {
    "auto": ("the fastest of the others for this machine and checkpoint (recorded in summary.json)", (INSPECT, PEFT)),
    "merge": ("merge_and_unload into a temporary folder, Inspect hf provider", (INSPECT, PEFT)),
    "merge_in_memory": ("merge into the resident base, restore it after", (INSPECT, PEFT)),
    "direct": ("unmerged PEFT through the peft/ provider", (INSPECT, PEFT)),
    "vllm": ("vLLM server with native LoRA (vllm.server=standin: CPU stand-in, tests only)",
             (INSPECT, module("vllm"), cuda)),
    "none": ("no evaluation", ()),
}


def eval_strategies() -> dict[str, tuple[str, tuple[Check, ...]]]:

    out = {}
    for name, target in STRATEGIES.items():
        what, needs = EVAL_NEEDS.get(name, (target, ()))
        out[name] = (what, (module(target.split(":")[0]), *needs))
    return out


def status() -> list[dict]:
    """One row per plugin: group, name, what, ready, missing."""
    groups = {**PLUGINS, "eval": eval_strategies()}
    rows = []
    for group in ("checkpointer", "eval", "launcher", "logger", "loader"):
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
