"""The pinned stack imports together and matches constraints.txt. When this fails,
the message says which package drifted and why the pin exists."""

import re
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_whole_stack_imports():
    import hydra  # noqa: F401
    import inspect_ai  # noqa: F401
    import peft  # noqa: F401
    import submitit  # noqa: F401
    import torch  # noqa: F401
    import torchao  # noqa: F401
    import torchtune  # noqa: F401
    import transformers  # noqa: F401
    import wandb  # noqa: F401
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: F401
    from torchtune.models.qwen2 import lora_qwen2  # noqa: F401  (pulls torchao quant APIs)
    from peft import LoraConfig, get_peft_model  # noqa: F401


def test_installed_versions_match_constraints():
    drift = {}
    for name, pinned in pins().items():
        got = version(name)
        if Version(got).public != Version(pinned).public:
            drift[name] = f"installed {got}, constraints.txt pins {pinned}"
    assert not drift, f"dependency set drifted from constraints.txt: {drift}"


def test_known_incompatibilities_absent():
    """The combinations seen breaking (see constraints.txt comments)."""
    torchao, peft, transformers = (Version(version(n)) for n in ("torchao", "peft", "transformers"))
    assert torchao < Version("0.16"), f"torchao {torchao}: torchtune 0.6.1 needs int4_weight_only (gone in 0.16)"
    assert not (peft >= Version("0.19") and torchao < Version("0.16")), f"peft {peft} refuses torchao {torchao}"
    assert transformers < Version("5"), f"transformers {transformers} breaks with peft 0.18 adapters"
    assert version("torchtune") == "0.6.1"
