"""The base-score cache key covers the content of everything that decides the score
(kit/eval/score_key.py): each planted staleness gives another key, so the cache misses; the
same content gives the same key wherever it lies; a file is read once per version."""

import json
import os
import shutil
from pathlib import Path

import pytest

from kit.core.config import compose
from kit.eval import score_key
from kit.eval.context import EvalContext

TASK = """
from pathlib import Path
from inspect_ai import Task, task
from inspect_ai.dataset import json_dataset
from inspect_ai.scorer import {scorer}
from inspect_ai.solver import generate

KIT_DATA_FILES = ["rubric.txt"]


@task
def mine():
    return Task(dataset=json_dataset(str(Path(__file__).parent / "data.jsonl")), solver=generate(), scorer={scorer}())
"""
ROWS = [{"input": "Is 3 even or odd?", "target": "odd"}, {"input": "Is 4 even or odd?", "target": "even"}]


@pytest.fixture
def setup(tiny_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a task file is given relative (Inspect refuses absolute globs)
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.py").write_text(TASK.format(scorer="exact"))
    (tasks / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tasks / "rubric.txt").write_text("odd or even")
    return base, tasks


def key(base: Path, tasks: Path, *overrides: str, specs=None, scorer="peft/base") -> str:
    cfg = compose("train", list(overrides))
    specs = specs or [f"{tasks.name}/mine.py", "kit/parity"]
    ctx = EvalContext("adapter", Path("adapter"), base, specs, Path("logs"), cfg.eval, Path("."), limit=cfg.tasks.limit)
    return score_key.score_key(score_key.score_identity(ctx, scorer))


def edit(path: Path, text: str, keep_times: bool = False) -> None:
    st = path.stat()
    path.write_text(text)
    if keep_times:  # same mtime as before: only the content (and ctime) changed
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_same_content_same_key_wherever_it_lies(setup, tmp_path):
    base, tasks = setup
    first = key(base, tasks)
    assert key(base, tasks) == first
    moved = tmp_path / "elsewhere"
    shutil.copytree(base, moved)  # new paths, inodes and times; the same bytes
    assert key(moved, tasks) == first


@pytest.mark.parametrize(
    "staleness",
    [
        "task_file",
        "task_data",
        "declared_file",
        "tokenizer",
        "chat_template",
        "weights_same_size_and_mtime",
        "config",
        "version",
        "inspect_version",
        "kit_source",
        "generation",
        "limit",
        "dtype",
        "scorer_path",
    ],
)
def test_each_staleness_misses_the_cache(setup, monkeypatch, staleness):
    base, tasks = setup
    before = key(base, tasks)
    overrides, scorer = [], "peft/base"
    if staleness == "task_file":
        edit(tasks / "mine.py", TASK.format(scorer="includes"))
    elif staleness == "task_data":
        edit(tasks / "data.jsonl", (tasks / "data.jsonl").read_text().replace('"odd"}', '"even"}', 1))
    elif staleness == "declared_file":
        edit(tasks / "rubric.txt", "even or odd")
    elif staleness == "tokenizer":
        tok = json.loads((base / "tokenizer.json").read_text())
        tok["added_tokens"][0]["content"] = "<|im_stop|>"
        edit(base / "tokenizer.json", json.dumps(tok))
    elif staleness == "chat_template":
        edit(base / "chat_template.jinja", (base / "chat_template.jinja").read_text().replace("assistant", "helper"))
    elif staleness == "weights_same_size_and_mtime":
        weights = base / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1  # one bit of one weight
        st = weights.stat()
        weights.write_bytes(bytes(data))
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    elif staleness == "config":
        config = json.loads((base / "generation_config.json").read_text())
        edit(base / "generation_config.json", json.dumps({**config, "repetition_penalty": 1.3}))
    elif staleness == "version":
        real = score_key.stack_versions
        monkeypatch.setattr(score_key, "stack_versions", lambda: {**real(), "transformers": "4.57.7"})
    elif staleness == "inspect_version":
        real = score_key.stack_versions
        monkeypatch.setattr(score_key, "stack_versions", lambda: {**real(), "inspect_ai": "0.3.0"})
    elif staleness == "kit_source":
        monkeypatch.setattr(score_key, "kit_source", lambda: "another kit")
    elif staleness == "generation":
        overrides = ["eval.max_tokens=9"]
    elif staleness == "limit":
        overrides = ["tasks.limit=5"]
    elif staleness == "dtype":
        overrides = ["eval.dtype=bf16"]
    else:
        scorer = "hf"
    assert key(base, tasks, *overrides, scorer=scorer) != before


def test_a_bin_only_base_has_a_weight_identity(setup):
    """No safetensors at all: the .bin weights are hashed like any other file."""
    base, tasks = setup
    (base / "model.safetensors").rename(base / "pytorch_model.bin")
    before = key(base, tasks)
    edit(base / "pytorch_model.bin", "other bytes", keep_times=True)
    assert key(base, tasks) != before


def test_a_registered_task_is_its_module_and_its_samples(setup):
    base, tasks = setup
    [identity] = score_key.task_identities(["kit/parity"])
    assert identity["source"] and identity["sample_count"] == 100
    assert identity["scorer"] == [{"name": "inspect_ai/exact", "params": {}}]
    assert score_key.task_identities(["kit/parity"]) == [identity]  # stable across loads


def test_a_file_is_read_once_per_version(tmp_path, monkeypatch):
    from kit.core import identity

    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * 1000)
    reads = []
    real = identity.file_sha256
    monkeypatch.setattr(identity, "file_sha256", lambda p: reads.append(p) or real(p))
    first = identity.content_sha256(path, tmp_path / "hashes")
    assert identity.content_sha256(path, tmp_path / "hashes") == first and len(reads) == 1
    path.write_bytes(b"y" * 1000)  # same size
    assert identity.content_sha256(path, tmp_path / "hashes") != first and len(reads) == 2


@pytest.mark.slow
def test_base_scores_hit_miss_and_logs_kept_with_each_job(setup, tmp_path):
    """Real Inspect scoring of the tiny base through the resident ``peft/base``: a second job
    hits the cache and gets the base's logs copied into its own dir (they outlive the job that
    scored them); an edited data file misses."""
    from kit.eval.base_scores import base_scores
    from kit.eval.session import EvalSession

    base, tasks = setup
    cfg = compose("train", ["eval=direct"])

    def run(job: str) -> dict:
        logs = tmp_path / job / "inspect_logs"
        return base_scores(EvalContext("adapter", Path("adapter"), base, [f"{tasks.name}/mine.py"], logs, cfg.eval, tmp_path))

    with EvalSession():  # one resident base for the three, as in a sweep
        first, second = run("job1"), run("job2")
        assert (first["cached"], second["cached"]) == (False, True) and first["scores"] == second["scores"]
        for result, job in ((first, "job1"), (second, "job2")):
            assert [Path(p).parent for p in result["logs"]] == [tmp_path / job / "inspect_logs" / "base"]
        shutil.rmtree(tmp_path / "job1")  # the job that scored it is gone: the other keeps its copy
        assert all(Path(p).is_file() for p in second["logs"])
        edit(tasks / "data.jsonl", (tasks / "data.jsonl").read_text() + json.dumps({"input": "Is 5?", "target": "odd"}) + "\n")
        third = run("job3")
    assert not third["cached"] and third["key"] != second["key"]


def test_an_entry_without_its_logs_is_scored_again(tmp_path, capsys):
    """The paired tests need the base's per-sample scores: scores alone are not a usable entry."""
    from kit.eval.base_scores import RECORD, read_cached

    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / RECORD).write_text(json.dumps({"scores": {"t": {"mean": 0.5}}, "logs": ["gone.eval"]}))
    assert read_cached(entry) is None and "has lost its Inspect logs" in capsys.readouterr().err
    (entry / "gone.eval").write_text("a log")
    assert read_cached(entry)["scores"] == {"t": {"mean": 0.5}}
