"""Faults and hostile input (issue 15): nothing finished is lost, nothing unfinished is recorded as
done, one sweep dir has one writer, and every fault ends in one line naming what and where."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OFFLINE, run_kit

from kit.core.jobdir import is_done, read_summary, set_aside, write_summary

SHORT = ["trainer.epochs=1", "trainer.max_steps_per_epoch=2", "logger=none", "verify.after_train=false",
         "eval.base_scores=false"]


def kit_popen(args: list[str], cache: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "kit", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def kit_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("kit: ")]


# ---------------------------------------------------------------- 0: Ctrl-C during the eval

@pytest.mark.slow
def test_ctrl_c_during_eval_is_not_a_result(kit_cache, tmp_path):
    """SIGINT while Inspect evaluates: exit 130, one line saying what was kept, the summary says
    interrupted (never done), and the same command runs the job again instead of skipping it."""
    job = tmp_path / "job"
    args = ["train", *SHORT, "eval.batch_size=1", "eval.max_tokens=16", f"hydra.run.dir={job}"]
    proc = kit_popen(args, kit_cache, tmp_path)
    wait_for(lambda: any((job / "inspect_logs").glob("*.eval")), proc)
    time.sleep(2)  # a few samples in
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = kit_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("kit: interrupted:") and str(job) in lines[0], stderr[-2000:]
    assert "adapter" in lines[0]  # what was kept
    summary = read_summary(job)
    assert summary["status"] == "interrupted" and not is_done(job), summary
    assert (job / "adapter" / "adapter_model.safetensors").is_file()  # nothing lost

    proc = run_kit(args[:-1] + ["eval=none", f"hydra.run.dir={job}"], kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already done" not in proc.stdout + proc.stderr
    assert read_summary(job / "attempts" / "1")["status"] == "interrupted"
    assert is_done(job)
