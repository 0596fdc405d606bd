"""The pinned stack imports together and matches the lock. When this fails, the message
says which package drifted; why a direct pin exists is written in constraints.in.

constraints.txt is the whole transitive set, compiled from pyproject.toml and
constraints.in (the command is at its top); constraints.in holds the direct pins.
"""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(name: str = "constraints.txt") -> dict[str, str]:
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project.get("optional-dependencies", {}).get("dev", [])]
    return [Requirement(r) for r in reqs]


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in extras or {""})


def installed_closure() -> tuple[dict[str, str], list[str]]:
    """Every distribution kit needs (pyproject's dependencies and dev extra, followed through
    the installed metadata, extras included): {name: installed version}, and the ones missing."""
    found: dict[str, str] = {}
    missing: list[str] = []
    todo = [(r, set(r.extras)) for r in project_requirements()]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            missing.append(name)
            continue
        found[name] = dist.version
        # pip follows an extra only as the distribution spells it (torchtune's hf_transfer is not
        # huggingface-hub's hf-transfer), where uv normalizes: the lock may hold a few unused pins.
        extras &= set(dist.metadata.get_all("Provides-Extra") or [])
        for sub in map(Requirement, dist.requires or []):
            if applies(sub, extras):
                todo.append((sub, set(sub.extras)))
    return found, missing


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
    from peft import LoraConfig, get_peft_model  # noqa: F401
    from torchtune.models.qwen2 import lora_qwen2  # noqa: F401  (pulls torchao quant APIs)

    from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: F401


def test_every_needed_package_is_locked_and_installed_at_its_pin():
    """The whole set kit needs, not only the direct pins: a transitive package that pip
    resolved to another version, or one the lock lacks (regenerate it), is drift."""
    found, missing = installed_closure()
    assert not missing, f"needed but not installed: {sorted(missing)}"
    locked = pins()
    unlocked = sorted(set(found) - set(locked) - {"kit"})
    assert not unlocked, f"installed but not in constraints.txt (regenerate it, command at its top): {unlocked}"
    drift = {
        n: f"installed {found[n]}, constraints.txt pins {locked[n]}"
        for n in sorted(found)
        if n in locked and Version(found[n]) != Version(locked[n])
    }
    assert not drift, f"dependency set drifted from constraints.txt: {drift}"


def test_lock_is_compiled_from_the_direct_pins():
    """constraints.in's pins are what constraints.txt holds (an edited .in that was not
    recompiled), and the lock says how to regenerate it."""
    lock, direct = pins(), pins("constraints.in")
    stale = {
        n: f"constraints.in {v}, constraints.txt {lock.get(n)}"
        for n, v in direct.items()
        if n not in lock or Version(lock[n]).public != Version(v).public
    }
    assert not stale, f"constraints.txt is stale against constraints.in, regenerate it: {stale}"
    head = (ROOT / "constraints.txt").read_text().splitlines()[:12]
    assert any("uv pip compile" in line and "constraints.in" in line for line in head), head


def test_torch_is_the_cpu_wheel_pinned():
    assert pins()["torch"] == "2.13.0+cpu", "the lock must hold the CPU build (see constraints.in)"
    assert version("torch") == "2.13.0+cpu"


def test_known_incompatibilities_absent():
    """The combinations seen breaking (see constraints.txt comments)."""
    torchao, peft, transformers = (Version(version(n)) for n in ("torchao", "peft", "transformers"))
    assert torchao < Version("0.16"), f"torchao {torchao}: torchtune 0.6.1 needs int4_weight_only (gone in 0.16)"
    assert not (peft >= Version("0.19") and torchao < Version("0.16")), f"peft {peft} refuses torchao {torchao}"
    assert transformers < Version("5"), f"transformers {transformers} breaks with peft 0.18 adapters"
    assert version("torchtune") == "0.6.1"
