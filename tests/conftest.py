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
