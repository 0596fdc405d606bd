import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_SILENT": "true"}


def pytest_configure(config):
    """kit's list of known-harmless warnings (kit.core.log.NOISY_WARNINGS) holds for the tests too."""
    from kit.core.log import pytest_filters

    for line in pytest_filters():
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def kit_cache(tmp_path_factory) -> Path:
    """One model cache per test session: the tiny model is built once, offline."""
    cache = tmp_path_factory.mktemp("kit_cache")
    os.environ["KIT_CACHE"] = str(cache)
    os.environ.update(OFFLINE)
    return cache


@pytest.fixture(scope="session")
def tiny_base(kit_cache) -> Path:
    from kit.core.model.tiny import tiny_model_dir

    return tiny_model_dir()


def run_kit(args: list[str], cache: Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, as a user runs it."""
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def kit_in_process(args: list[str], cache: Path, cwd: Path, monkeypatch) -> subprocess.CompletedProcess:
    """``kit.__main__.main(args)`` in this process, the environment and directory ``run_kit`` gives a
    subprocess: for tests of what a command answers (exit status, its lines), where a new interpreter
    (5-6 s of imports each) is not what is tested."""
    import contextlib
    import io

    from kit.__main__ import main

    for key, value in {**OFFLINE, "KIT_CACHE": str(cache)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["kit", *args], code, out.getvalue(), err.getvalue())


def train_once(
    cache: Path, factory, name: str, *overrides: str, into: str = "hydra.run.dir"
) -> tuple[Path, subprocess.CompletedProcess]:
    """``python -m kit train`` with ``overrides`` into a fresh ``<name>/job`` dir (``<name>/sweep`` for
    ``into="hydra.sweep.dir"``), asserted to succeed: the shape of every session fixture that trains."""
    work = factory.mktemp(name)
    target = work / ("sweep" if into == "hydra.sweep.dir" else "job")
    proc = run_kit(["train", *overrides, f"{into}={target}"], cache, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target, proc


@pytest.fixture(scope="session")
def trained_job(kit_cache, tmp_path_factory) -> Path:
    """``python -m kit train`` exactly as a user runs it (8 epochs, adapter, W&B offline), once per
    session; tests that change it work on a copy (``copy_job``)."""
    job, proc = train_once(kit_cache, tmp_path_factory, "trained_job")
    (job.parent / "stdout.txt").write_text(proc.stdout)  # what the user saw: test_ux reads it
    (job.parent / "stderr.txt").write_text(proc.stderr)
    return job


@pytest.fixture(scope="session")
def rank_sweep(kit_cache, tmp_path_factory) -> Path:
    """A 2-point sweep (rank 8 and 64, one epoch) trained once per session: two adapters, one base."""
    args = ["-m", "lora.rank=8,64", "trainer.epochs=1", "logger=none", "eval=none"]
    return train_once(kit_cache, tmp_path_factory, "rank_sweep", *args, into="hydra.sweep.dir")[0]


@pytest.fixture(scope="session")
def full_job(kit_cache, tmp_path_factory) -> Path:
    """A ``checkpointer=full`` job (one epoch, no eval, verify after training on), trained once per
    session; tests evaluate or re-verify a copy (``copy_job``)."""
    args = ["checkpointer=full", "trainer.epochs=1", "eval=none", "logger=none"]
    return train_once(kit_cache, tmp_path_factory, "full_job", *args)[0]


@pytest.fixture(scope="session")
def report_sweep(kit_cache, tmp_path_factory):
    """A real sweep over both checkpointers through ``hydra/launcher=submitit_local``, W&B offline
    (10 steps, 20 held-out samples): (sweep dir, the finished process). Shared by the sweep report's
    tests and the per-sample tables, lineage and sweep page tests."""
    work = tmp_path_factory.mktemp("report")
    sweep_dir = work / "sweep"
    proc = run_kit(
        [
            "train",
            "-m",
            "checkpointer=adapter,full",
            f"hydra.sweep.dir={sweep_dir}",
            "trainer.epochs=1",
            "trainer.max_steps_per_epoch=10",
            "tasks.limit=20",
            "hydra/launcher=submitit_local",
            "logger.tags=[report_test]",
        ],
        kit_cache,
        work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc


def copy_job(job: Path, dest: Path) -> Path:
    """A copy of a finished job dir to evaluate or damage without touching the original."""
    import shutil

    shutil.copytree(job, dest)
    return dest


SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "scontrol", "squeue", "scancel")


def free_port_pair() -> int:
    """A port p with p and p+1 free (slurmctld, slurmd)."""
    import socket

    for port in range(16817, 17817, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for the test SLURM cluster")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (munged, slurmctld, slurmd) for the session:
    launchers/local_slurm/start.sh brings it up, stop.sh takes it down."""
    import shutil

    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM binaries {missing} not installed; run launchers/local_slurm/install.sh")
    scripts = ROOT / "launchers" / "local_slurm"
    env = {**os.environ, "KIT_SLURM_DIR": str(tmp_path_factory.mktemp("slurm")), "KIT_SLURM_PORT": str(free_port_pair())}
    started = subprocess.run([str(scripts / "start.sh")], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        conf = env["KIT_SLURM_DIR"] + "/slurm.conf"
        os.environ["SLURM_CONF"] = conf
        yield conf
    finally:
        os.environ.pop("SLURM_CONF", None)
        subprocess.run([str(scripts / "stop.sh")], env=env, timeout=60)
