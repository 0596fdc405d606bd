"""Faults and hostile input: nothing finished is lost, nothing unfinished is recorded as
done, one sweep dir has one writer, and every fault ends in one line naming what and where."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OFFLINE, kit_in_process, run_kit

from kit.core.jobdir import is_done, read_summary, set_aside, write_summary

SHORT = ["trainer.epochs=1", "trainer.max_steps_per_epoch=2", "logger=none", "verify.after_train=false", "eval.base_scores=false"]


def default_sigint() -> None:
    """In the child before it runs kit: Ctrl-C as a terminal delivers it. A suite started in the
    background of a non-interactive shell runs with SIGINT ignored, and a child inherits that."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def kit_popen(args: list[str], cache: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "kit", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def kit_lines(stderr: str) -> list[str]:
    """kit's error, interruption and warning lines (not its progress lines, ``kit: <phase> ...``)."""
    return [ln for ln in stderr.splitlines() if ln.startswith(("kit: error:", "kit: interrupted", "kit: warning:"))]


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


# ---------------------------------------------------------------- 5: datasets checked up front


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "line,needles",
    [
        ('{"question": 7, "answer": "odd"}\n', ["line 2", "'question'", "a number", "expected a string"]),
        ('{"question": "Is 3 even?", "answer": null}\n', ["line 2", "'answer'", "null"]),
        (b'{"question": "Is 3 \xff even?", "answer": "odd"}\n', ["line 2 column 20", "not UTF-8", "0xff"]),
    ],
)
def test_dataset_rows_checked_with_file_line_and_column(tmp_path, tiny_base, line, needles):
    from kit.core.errors import KitError
    from kit.job.phases.train import check_dataset

    data = tmp_path / "data.jsonl"
    good = b'{"question": "Is 2 even?", "answer": "even"}\n'
    data.write_bytes(good + (line if isinstance(line, bytes) else line.encode()))
    with pytest.raises(KitError) as e:
        check_dataset(str(data), ("question", "answer"), tiny_base)
    assert str(data) in str(e.value)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_row_longer_than_the_context_fails_before_training(kit_cache, tmp_path, tiny_base):
    """The tiny model's context is 256 tokens: a 400-word prompt fails up front naming file and line,
    not as a torchtune traceback mid-epoch; no job dir is made."""
    data = tmp_path / "long.jsonl"
    rows = [{"question": "Is 2 even?", "answer": "even"}] * 3 + [{"question": " ".join(["seven"] * 400), "answer": "odd"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = tmp_path / "job"
    proc = run_kit(["train", f"dataset.train_file={data}", *SHORT, f"hydra.run.dir={job}"], kit_cache, tmp_path)
    assert_one_line_error(proc, str(data), "line 4", "context is 256")
    assert not job.exists()


# ---------------------------------------------------------------- 10: ranges checked for every sweep point


@pytest.mark.parametrize(
    "args,needle",
    [
        (["lora.rank=0"], "lora.rank=0"),
        (["-m", "lora.rank=8,-1"], "lora.rank=-1"),
        (["trainer.lr=0"], "trainer.lr=0"),
        (["lora.dropout=1.5"], "lora.dropout=1.5"),
    ],
)
def test_out_of_range_values_exit_2_before_any_job_dir(kit_cache, tmp_path, monkeypatch, args, needle):
    run_dir, sweep_dir = tmp_path / "job", tmp_path / "sweep"
    argv = ["train", *args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={sweep_dir}"]
    proc = kit_in_process(argv, kit_cache, tmp_path, monkeypatch)
    assert_one_line_error(proc, needle, "out of range")
    assert not run_dir.exists() and not sweep_dir.exists()


# ---------------------------------------------------------------- 6, 9: full disks and damaged caches


@pytest.fixture
def small_disk(tmp_path):
    """A tiny tmpfs (a real file system that fills up); skipped where mounting is not allowed."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> None:
    """Fill a file system to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def base_score_cache(cache: Path, limit: int) -> Path:
    """The record the job below will look for (its key: kit.eval.score_key)."""
    from omegaconf import OmegaConf

    from kit.core.config import compose
    from kit.core.model.tiny import tiny_model_dir
    from kit.eval.base_scores import RECORD, entry_dir
    from kit.eval.context import EvalContext

    cfg = compose("train", [f"tasks.limit={limit}"])
    OmegaConf.resolve(cfg)
    ctx = EvalContext(
        "adapter",
        Path("adapter"),
        tiny_model_dir(),
        list(cfg.tasks.specs),
        Path("logs"),
        cfg.eval,
        Path("."),
        limit=limit,
        strategy="direct",  # eval=auto on a CPU: direct or merge_in_memory, both score peft/base
    )
    entry, _ = entry_dir(ctx)
    assert entry.parent == cache / "base_scores"
    return entry / RECORD


@pytest.mark.slow
def test_damaged_base_score_cache_is_recomputed(kit_cache, tmp_path):
    limit = 3  # a cache entry of its own
    cached = base_score_cache(kit_cache, limit)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text('{"scores": {"parity": {"accuracy"')  # cut short
    job = tmp_path / "job"
    args = ["train", *SHORT[:-1], f"tasks.limit={limit}", f"hydra.run.dir={job}"]
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: warning:") and "base-score" in ln]
    assert len(warnings) == 1 and str(cached) in warnings[0], proc.stderr[-2000:]
    summary = read_summary(job)
    assert summary["status"] == "done" and summary["base_scores"]["parity"]["mean"] >= 0
    assert json.loads(cached.read_text())["scores"] == summary["base_scores"]  # replaced by a good one


@pytest.mark.slow
def test_full_cache_disk_does_not_fail_a_finished_job(kit_cache, tmp_path, tiny_base, small_disk):
    """$KIT_CACHE on a file system with no space left: the base scores are computed and kept in the
    summary, the cache write is skipped with one warning line, the job is done."""
    import shutil

    cache = small_disk("2m")
    shutil.copytree(tiny_base, cache / tiny_base.name)
    fill(cache)
    job = tmp_path / "job"
    proc = run_kit(["train", *SHORT[:-1], "tasks.limit=3", f"hydra.run.dir={job}"], cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: warning:")]
    assert len(warnings) == 1 and "not written" in warnings[0], proc.stderr[-2000:]
    summary = read_summary(job)
    assert summary["status"] == "done" and summary["base_scores"]["parity"]["mean"] >= 0


@pytest.mark.slow
def test_disk_full_during_a_job_is_one_line_and_a_failed_summary(kit_cache, tmp_path, small_disk):
    """The job dir's disk fills while the merged model is written for the eval: one line naming
    the disk full, no traceback, the summary says failed (not running), the adapter is kept."""
    disk = small_disk("500k")
    job = disk / "job"
    # eval=merge: the strategy that writes a merged model (the default, auto, evaluates unmerged on a CPU)
    proc = run_kit(["train", *SHORT, "eval=merge", "tasks.limit=2", f"hydra.run.dir={job}"], kit_cache, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = assert_one_line_error(proc, "disk full writing")
    assert str(job) in line
    summary = read_summary(job)
    assert summary["status"] == "failed" and "disk full" in summary["error"], summary
    assert (job / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(job.glob("kit-merged-*"))  # the temporary model is gone


# ---------------------------------------------------------------- 3: one writer per sweep dir and job dir

HOLDER = """
import sys, time
from pathlib import Path
from kit.core.locks import hold
hold(Path(sys.argv[1]), "job dir")
print("held", flush=True)
time.sleep(600)
"""


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    from kit.core.errors import KitError
    from kit.core.locks import hold, release

    job = tmp_path / "job"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(job)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(KitError) as e:
            hold(job, "job dir")
        assert f"pid {holder.pid} on host " in str(e.value) and str(job) in str(e.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
        holder.wait()
    assert hold(job, "job dir")
    release(job)


@pytest.mark.slow
def test_second_sweep_into_a_live_sweep_dir_refuses(kit_cache, tmp_path):
    """Sweep B into sweep A's dir while A runs: B exits 2 in one line naming A's pid, touching
    nothing; A finishes undisturbed. After A is killed hard, the same command resumes."""
    sweep = tmp_path / "sweep"
    args = [
        "train",
        "-m",
        "lora.rank=4,8",
        *SHORT[2:],
        "trainer.epochs=1",
        "eval=none",
        f"hydra.sweep.dir={sweep}",
    ]  # a whole epoch: long enough for B to start while A trains
    first = kit_popen(args, kit_cache, tmp_path)
    wait_for(lambda: (sweep / "0" / "summary.json").exists(), first)
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file() and p.name != ".kit.lock"}
    second = run_kit(args, kit_cache, tmp_path)
    line = assert_one_line_error(second, f"pid {first.pid} on host", str(sweep))
    assert "in use" in line
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    for path in before:  # B wrote nothing A had (A itself updated its summaries)
        assert path.exists(), path
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert not list(sweep.glob("*/attempts"))  # nobody moved a live attempt aside
    steps = [read_summary(sweep / str(n))["train"]["steps"] for n in range(2)]
    assert steps[0] == steps[1] > 2, steps  # one whole epoch each: no interleaved second run

    # killed hard mid-sweep: the lock goes with the process, the rerun resumes
    again = tmp_path / "again"
    args = ["train", "-m", "lora.rank=4,8", *SHORT, "eval=none", f"hydra.sweep.dir={again}"]
    killed = kit_popen(args, kit_cache, tmp_path)
    wait_for(lambda: (again / "0" / "summary.json").exists(), killed)
    killed.kill()
    killed.communicate()
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_summary(again / "0" / "attempts" / "1")["status"] == "interrupted"


# ---------------------------------------------------------------- 8: secrets never written


@pytest.mark.parametrize(
    "override",
    ["serve.api_key=sk-kit-5ecr3t", "+logger.wandb_api_key=sk-kit-5ecr3t", "+hydra.job.env_set.HF_TOKEN=sk-kit-5ecr3t"],
)
def test_a_secret_on_the_command_line_is_refused_unechoed(override, capsys, tmp_path):
    """argv is readable by every user (/proc/<pid>/cmdline) and is copied into Hydra's files, submitit's
    pickles, the sweep manifest and W&B: a secret-named key with a value is refused before anything."""
    from kit.__main__ import main

    sweep = tmp_path / "sweep"
    assert main(["train", "-m", "lora.rank=4", override, f"hydra.sweep.dir={sweep}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "on the command line" in err[0] and "sk-kit-5ecr3t" not in err[0]
    assert not sweep.exists()


@pytest.mark.slow
def test_secrets_from_the_environment_are_written_nowhere_by_a_submitit_sweep(kit_cache, tmp_path, monkeypatch):
    """A 2-point submitit_local sweep with W&B offline, the keys in the environment where they belong:
    no file of the sweep dir holds one (manifest, .submitit pickles and logs, .hydra, summaries, .wandb)."""
    secret = "sk-kit-test-5ecr3t-7781"
    for var in ("WANDB_API_KEY", "HF_TOKEN", "KIT_API_KEY"):
        monkeypatch.setenv(var, secret)
    sweep = tmp_path / "sweep"
    args = [
        "train",
        "-m",
        "lora.rank=4,8",
        "debug=default",
        "logger=wandb",
        "eval=none",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(sweep.rglob("*.wandb")) and list(sweep.rglob("*.pkl")) and (sweep / "manifest.json").is_file()
    leaks = [str(p.relative_to(sweep)) for p in sweep.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    assert secret not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- 14: every eval checks the adapter first


@pytest.fixture(scope="module")
def short_job(kit_cache, tmp_path_factory) -> Path:
    """A done job with an adapter (2 steps, no eval): the tests damage copies of it."""
    work = tmp_path_factory.mktemp("short_job")
    job = work / "job"
    proc = run_kit(["train", *SHORT, "eval=none", f"hydra.run.dir={job}"], kit_cache, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job


def damaged(short_job: Path, dest: Path, change) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    job = Path(shutil.copytree(short_job, dest))
    adapter = job / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    change(config, tensors)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, adapter / "adapter_model.safetensors")
    # As an adapter whose job recorded no content hash (or recorded the hash of a bad export): the
    # identity check would refuse it first (tests/test_run_identity.py); these checks read the folder.
    summary = json.loads((job / "summary.json").read_text())
    summary["checkpoint"].pop("content_hash", None)
    (job / "summary.json").write_text(json.dumps(summary))
    return job


def drop_target(config, tensors):
    config["target_modules"] = [t for t in config["target_modules"] if t != "v_proj"]


def rslora(config, tensors):
    config["use_rslora"] = True


def drop_weights(config, tensors):
    for key in [k for k in tensors if ".layers.1.mlp.down_proj." in k]:
        del tensors[key]


def zero_b(config, tensors):
    for key in [k for k in tensors if ".lora_B." in k]:
        tensors[key].zero_()


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,needle",
    [
        (drop_target, "target_modules="),
        (rslora, "use_rslora=True"),
        (drop_weights, "missing"),
        (zero_b, "lora_B"),
    ],
)
def test_kit_eval_refuses_an_adapter_that_is_not_the_jobs(kit_cache, tmp_path, monkeypatch, short_job, change, needle):
    job = damaged(short_job, tmp_path / "job", change)
    before = (job / "summary.json").read_text()
    args = ["eval", str(job), "eval=merge", "tasks.limit=2", "eval.base_scores=false", "logger=none"]
    proc = kit_in_process(args, kit_cache, tmp_path, monkeypatch)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = kit_lines(proc.stderr)
    assert any(needle in ln and "adapter" in ln for ln in lines), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (job / "summary.json").read_text() == before  # no eval entry appended


def zero_a(config, tensors):
    """lora_B untouched (non-zero), lora_A zero: B @ A = 0, the adapter loads and changes nothing."""
    for key in [k for k in tensors if ".lora_A." in k]:
        tensors[key].zero_()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["merge", "direct", "merge_in_memory", "vllm"])
def test_every_eval_path_fails_loudly_on_an_adapter_that_changes_nothing(kit_cache, tmp_path, monkeypatch, short_job, strategy):
    """vllm: through the server's own logprobs (kit's stand-in here), before Inspect runs."""
    job = damaged(short_job, tmp_path / "job", zero_a)
    more = ["eval.vllm.server=standin"] if strategy == "vllm" else []
    args = ["eval", str(job), f"eval={strategy}", *more, "tasks.limit=2", "eval.base_scores=false", "logger=none"]
    proc = kit_in_process(args, kit_cache, tmp_path, monkeypatch)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert any("changes nothing" in ln for ln in kit_lines(proc.stderr)), proc.stderr[-2000:]
    assert not list(job.glob("kit-merged-*"))


# ---------------------------------------------------------------- 7, 13: truncated summaries, killed attempts


def test_unreadable_summary_is_an_unfinished_attempt_kept_aside(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "summary.json").write_text('{"status": "done", "scores": {"parity": {"me')  # cut short
    summary = read_summary(job)
    assert summary["status"] == "unreadable" and str(job / "summary.json") in summary["error"]
    assert not is_done(job)
    dest = set_aside(job)
    assert (dest / "summary.json").read_text().endswith('"me')  # the file itself is kept, unchanged
    assert not (job / "summary.json").exists()


def test_set_aside_drops_merged_temp_models_and_marks_running_interrupted(tmp_path):
    job = tmp_path / "job"
    (job / "adapter").mkdir(parents=True)
    (job / "kit-merged-abc123").mkdir()
    (job / "kit-merged-abc123" / "model.safetensors").write_bytes(b"\0" * 4096)  # a killed eval's merged copy
    write_summary(job, {"status": "running", "overrides": []})
    dest = set_aside(job)
    assert not list(job.glob("kit-merged-*")) and not list(dest.glob("kit-merged-*"))
    assert read_summary(dest)["status"] == "interrupted" and (dest / "adapter").is_dir()


def test_syntax_error_in_a_task_file_is_named(tmp_path):
    from kit.core.errors import KitError
    from kit.eval.inspect_runner import load_task_specs

    task = tmp_path / "my_task.py"
    task.write_text("from inspect_ai import task\n\n@task\ndef mine(:\n    pass\n")
    with pytest.raises(KitError) as e:
        load_task_specs([f"{task}@mine"])
    assert str(task) in str(e.value) and "line 4" in str(e.value) and "SyntaxError" in str(e.value)
    assert "not found" not in str(e.value)


@pytest.mark.slow
def test_truncated_summary_blocks_neither_resume_nor_report(kit_cache, tmp_path):
    """A sweep job's summary.json cut short: kit report names the file (no traceback), the
    same sweep command sets the attempt aside (file kept) and runs the job again."""
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "lora.rank=4,8", *SHORT, "eval=none", f"hydra.sweep.dir={sweep}"]
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    broken = sweep / "1" / "summary.json"
    text = broken.read_text()
    broken.write_text(text[: len(text) // 2])

    report = run_kit(["report", str(sweep)], kit_cache, tmp_path)
    assert "Traceback" not in report.stderr, report.stderr[-2000:]
    assert str(broken) in report.stdout and "unreadable" in report.stdout, report.stdout[-2000:]

    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (sweep / "1" / "attempts" / "1" / "summary.json").read_text() == text[: len(text) // 2]
    assert is_done(sweep / "1") and is_done(sweep / "0")
    assert "already done" in proc.stdout  # job 0 untouched
