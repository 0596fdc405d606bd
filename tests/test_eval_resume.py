"""Evals that resume (kit.eval.resume): which earlier log a rerun may reuse, and a real eval killed
half-way whose rerun scores only the rest and ends with the same result as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OFFLINE, run_kit
from omegaconf import OmegaConf

from kit.eval import resume

EVAL_CFG = OmegaConf.create(
    {"batch_size": 2, "max_connections": None, "max_tokens": 8, "temperature": 0.0, "seed": 0, "device": "cpu", "dtype": "fp32"}
)
SUBJECT = {"kind": "adapter", "content_hash": "a" * 64, "strategy": "direct"}


def write_log(path: Path, status: str, ident: str | None, samples: int = 3, errors: int = 0) -> Path:
    """A real Inspect log file (Inspect's own types and writer) with ``samples`` scored samples."""
    from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSample, EvalSpec, write_eval_log
    from inspect_ai.log._log import EvalError
    from inspect_ai.model import ModelOutput
    from inspect_ai.scorer import Score

    def sample(i):
        error = EvalError(message="boom", traceback="", traceback_ansi="") if i < errors else None
        output = ModelOutput.from_content("peft/x", "even")
        return EvalSample(
            id=i, epoch=1, input=f"Is {i} even?", target="even", output=output, scores={"exact": Score(value="C")}, error=error
        )

    spec = EvalSpec(
        created="2026-12-03T00:00:00+00:00",
        task="kit/parity",
        dataset=EvalDataset(samples=10),
        model="peft/x",
        config=EvalConfig(),
        metadata={resume.IDENTITY: ident} if ident else None,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(EvalLog(status=status, eval=spec, samples=[sample(i) for i in range(samples)]), str(path))
    return path


def test_identity_changes_with_every_part_that_changes_the_samples():
    ident = resume.identity(SUBJECT, "kit/parity", 20, EVAL_CFG)
    assert ident == resume.identity(dict(SUBJECT), "kit/parity", 20, EVAL_CFG.copy())  # stable
    others = [
        resume.identity({**SUBJECT, "content_hash": "b" * 64}, "kit/parity", 20, EVAL_CFG),  # another adapter
        resume.identity({**SUBJECT, "strategy": "merge"}, "kit/parity", 20, EVAL_CFG),
        resume.identity(SUBJECT, "kit/parity_long", 20, EVAL_CFG),
        resume.identity(SUBJECT, "kit/parity", 30, EVAL_CFG),
        *(
            resume.identity(SUBJECT, "kit/parity", 20, OmegaConf.merge(EVAL_CFG, {k: v}))
            for k, v in [
                ("batch_size", 4),
                ("max_connections", 8),
                ("max_tokens", 9),
                ("temperature", 0.5),
                ("seed", 1),
                ("dtype", "bf16"),
            ]
        ),
    ]
    assert ident not in others and len(set(others)) == len(others)


def test_a_task_file_is_identified_by_its_bytes(tmp_path):
    task = tmp_path / "task.py"
    task.write_text("# one\n")
    first = resume.identity(SUBJECT, f"{task}@t", None, EVAL_CFG)
    task.write_text("# two\n")
    assert resume.identity(SUBJECT, f"{task}@t", None, EVAL_CFG) != first


def test_only_an_unfinished_log_of_the_same_identity_is_reused_also_from_earlier_attempts(tmp_path):
    job = tmp_path / "job"
    log_dir = job / "inspect_logs"
    ident = resume.identity(SUBJECT, "kit/parity", None, EVAL_CFG)
    other = resume.identity({**SUBJECT, "content_hash": "b" * 64}, "kit/parity", None, EVAL_CFG)
    write_log(log_dir / "done.eval", "success", ident, samples=10)  # a result: never reused
    write_log(job / "attempts" / "1" / "inspect_logs" / "other.eval", "cancelled", other, samples=9)  # another adapter
    write_log(job / "attempts" / "1" / "inspect_logs" / "none.eval", "started", None, samples=9)  # no identity
    assert resume.find_resumable(log_dir, ident) is None
    small = write_log(job / "attempts" / "1" / "inspect_logs" / "small.eval", "started", ident, samples=3)
    assert resume.find_resumable(log_dir, ident) == small
    big = write_log(job / "attempts" / "2" / "inspect_logs" / "big.eval", "cancelled", ident, samples=6, errors=2)
    more = write_log(job / "attempts" / "2" / "inspect_logs" / "more.eval", "error", ident, samples=5)
    assert resume.find_resumable(log_dir, ident) == more  # the most clean samples (big has 4 clean)
    assert big.is_file()
    (log_dir / "broken.eval").write_bytes(b"PK\x03\x04 cut short")  # unreadable: skipped, not fatal
    assert resume.find_resumable(log_dir, ident) == more
    assert resume.plan("kit/parity", log_dir, EVAL_CFG, None).previous is None  # outside a resume scope
    with resume.resume_scope(SUBJECT):
        assert resume.plan("kit/parity", log_dir, EVAL_CFG, None).previous == more
        assert resume.plan("kit/parity", log_dir, OmegaConf.merge(EVAL_CFG, {"resume": False}), None).previous is None


# ---------------------------------------------------------------- a real eval killed half-way


RUN = [
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=30",
    "tasks.limit=40",
    "eval=direct",
    "eval.batch_size=2",  # 20 batches: time to kill it half-way
    "eval.base_scores=false",
    "logger=none",
    "verify.after_train=false",
]


def clean_samples(path: Path) -> int:
    from inspect_ai.log import read_eval_log_sample_summaries

    try:
        return sum(1 for s in read_eval_log_sample_summaries(str(path)) if s.completed and not s.error)
    except Exception:  # being written
        return 0


def per_sample(path: str) -> dict:
    from inspect_ai.log import read_eval_log

    return {(s.id, s.epoch): (s.output.completion, s.scores["exact"].value, s.uuid) for s in read_eval_log(path).samples}


@pytest.mark.slow
def test_an_eval_killed_half_way_resumes_and_ends_as_an_uninterrupted_one(kit_cache, tmp_path):
    job = tmp_path / "job"
    args = ["train", *RUN, f"hydra.run.dir={job}"]
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(kit_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 600
    while not any(clean_samples(p) >= 10 for p in (job / "inspect_logs").glob("*.eval")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # a hard kill: no handler runs (a node lost, a requeue past its grace)
    proc.wait(timeout=60)
    (killed,) = (job / "inspect_logs").glob("*.eval")
    before = clean_samples(killed)
    assert 10 <= before < 40

    rerun = run_kit(args, kit_cache, tmp_path)  # the same command: the attempt moves aside, the job runs again
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    kept = job / "attempts" / "1" / "inspect_logs" / killed.name
    assert kept.is_file()
    summary = json.loads((job / "summary.json").read_text())
    (resumed,) = summary["eval"]["resumed"]
    assert resumed == {"task": "kit/parity", "from": str(kept), "reused_samples": before, "scored_samples": 40 - before}
    final = per_sample(summary["eval"]["logs"][0])
    earlier = per_sample(str(kept))
    assert len(final) == 40 and sum(final[k][2] == earlier[k][2] for k in earlier) == before  # the same samples, not redone

    fresh = run_kit(["eval", str(job), "eval=direct", "eval.resume=false"], kit_cache, tmp_path)  # uninterrupted
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    entry = json.loads((job / "summary.json").read_text())["evals"][-1]
    assert "resumed" not in entry["eval"] or entry["eval"]["resumed"] == []
    uninterrupted = per_sample(entry["eval"]["logs"][0])
    assert {k: v[:2] for k, v in uninterrupted.items()} == {k: v[:2] for k, v in final.items()}
    assert entry["scores"] == summary["scores"]
    print(f"resume: killed after {before} of 40 samples; rerun reused {before}, scored {40 - before}; scores {summary['scores']}")
