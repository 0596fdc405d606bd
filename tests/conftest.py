import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_SILENT": "true"}


@pytest.fixture(scope="session")
def kit_cache(tmp_path_factory) -> Path:
    """One model cache per test session: the tiny model is built once, offline."""
    cache = tmp_path_factory.mktemp("kit_cache")
    os.environ["KIT_CACHE"] = str(cache)
    os.environ.update(OFFLINE)
    return cache


@pytest.fixture(scope="session")
def tiny_base(kit_cache) -> Path:
    from kit.tiny import tiny_model_dir

    return tiny_model_dir()


def run_kit(args: list[str], cache: Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, as a user runs it."""
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def trained_job(kit_cache, tmp_path_factory) -> Path:
    """``python -m kit train`` exactly as a user runs it (4 epochs, adapter, W&B offline), once per
    session; tests that change it work on a copy (``copy_job``)."""
    work = tmp_path_factory.mktemp("trained_job")
    job = work / "job"
    proc = run_kit(["train", f"hydra.run.dir={job}"], kit_cache, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job


@pytest.fixture(scope="session")
def rank_sweep(kit_cache, tmp_path_factory) -> Path:
    """A 2-point sweep (rank 8 and 64, one epoch) trained once per session: two adapters, one base."""
    work = tmp_path_factory.mktemp("rank_sweep")
    sweep = work / "sweep"
    args = ["train", "-m", "lora.rank=8,64", "trainer.epochs=1", "logger=none", "eval=none", f"hydra.sweep.dir={sweep}"]
    proc = run_kit(args, kit_cache, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def copy_job(job: Path, dest: Path) -> Path:
    """A copy of a finished job dir to evaluate or damage without touching the original."""
    import shutil

    shutil.copytree(job, dest)
    return dest
