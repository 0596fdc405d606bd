"""Eval strategies on one trained adapter: merge, merge_in_memory, direct (peft/ provider)
and vllm (through kit's CPU stand-in server; see kit/eval/vllm_standin.py) must give the same
scores and the same completions, for two tasks in one call, at batch size 1 and 32 (batch 1
on the first LIMIT[1] samples of each task: one sequence at a time is the slow part)."""

import shutil
import sys
from pathlib import Path

import pytest
from conftest import copy_job, train_once

pytestmark = pytest.mark.slow

TASKS = "tasks.specs=[kit/parity,kit/parity_long]"
STRATEGIES = {
    "merge": [],
    "merge_in_memory": [],
    "direct": [],
    "vllm": ["eval.vllm.server=standin"],
}
LIMIT = {32: 40, 1: 6}  # samples per task at each batch size


def completions(log_files: list[str]) -> dict:
    from inspect_ai.log import read_eval_log

    out = {}
    for path in log_files:
        log = read_eval_log(path)
        for sample in log.samples:
            out[(log.eval.task, sample.id)] = sample.output.completion
    return out


@pytest.fixture(scope="module")
def strategy_runs(trained_job, tmp_path_factory):
    from kit.core.jobdir import checkpoint_of, job_config, read_summary
    from kit.eval.evaluate import evaluate

    job = copy_job(trained_job, tmp_path_factory.mktemp("strategies") / "job")
    summary = read_summary(job)
    runs = {}
    for strategy, extra in STRATEGIES.items():
        for batch in (1, 32):
            overrides = [
                f"eval={strategy}",
                f"eval.batch_size={batch}",
                TASKS,
                f"tasks.limit={LIMIT[batch]}",
                "eval.base_scores=false",
                *extra,
            ]
            cfg = job_config(job, summary, overrides)
            result = evaluate(cfg, job, Path(summary["base_model"]), checkpoint_of(job, summary))
            runs[(strategy, batch)] = {
                "scores": result.scores,
                "completions": completions(result.info["logs"]),
                "eval": {**result.info, "temp_peak_bytes": result.temp_peak_bytes},
            }
    return runs


def test_every_strategy_gives_the_same_scores_and_completions(strategy_runs):
    reference = strategy_runs[("merge", 32)]
    assert set(reference["scores"]) == {"parity", "parity_long"}
    long_score = reference["scores"]["parity_long"]["mean"]
    assert 0.0 < long_score < 1.0, "a task with a score strictly between 0 and 1 makes the comparison meaningful"
    assert len(reference["completions"]) == 80
    for key, run in strategy_runs.items():
        if key[1] == 32:
            assert run["scores"] == reference["scores"], key
            assert run["completions"] == reference["completions"], key
        else:  # batch 1 on the first samples: the same completions as batch 32 gave them
            assert len(run["completions"]) == 2 * LIMIT[1], key
            assert run["completions"] == {k: reference["completions"][k] for k in run["completions"]}, key


def test_no_temporary_disk_except_merge(strategy_runs):
    for (strategy, _), run in strategy_runs.items():
        if strategy == "merge":
            assert run["eval"]["temp_peak_bytes"] > 0
        else:
            assert run["eval"]["temp_peak_bytes"] == 0


def test_merge_in_memory_restores_the_base_bit_exactly(trained_job):
    from kit.core.jobdir import read_summary
    from kit.lora.resident import ResidentBase

    summary = read_summary(trained_job)
    resident = ResidentBase(Path(summary["base_model"]), "cpu", "fp32")
    before = resident.fingerprint()
    name = resident.attach(trained_job / "adapter")
    with resident.lock:
        resident.activate(name, merged=True)
        merged = resident.fingerprint()
        resident.restore()
    assert merged != before, "the merge changed the resident weights"
    assert resident.fingerprint() == before


def test_peft_provider_loads_the_base_once_for_tasks_and_adapters(trained_job, rank_sweep, tmp_path):
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import get_model

    from kit.core.jobdir import read_summary
    from kit.eval.session import EvalSession

    base = read_summary(trained_job)["base_model"]
    adapters = [trained_job / "adapter", rank_sweep / "0" / "adapter", rank_sweep / "1" / "adapter"]
    with EvalSession() as session:  # what a kit command holds; the provider finds it
        for adapter in adapters:  # Inspect also builds provider instances for its model-info lookup
            model = get_model(f"peft/{adapter}", base=base, do_sample=False, memoize=False)
            logs = inspect_eval(
                ["kit/parity", "kit/parity_long"], model=model, limit=4, max_tokens=8, log_dir=str(tmp_path), display="none"
            )
            assert [log.status for log in logs] == ["success", "success"]
        assert session.base_loads == 1
        assert session.resident(Path(base), "cpu", "fp32").adapter_loads == 3


def test_peft_provider_from_inspects_own_cli(trained_job, tmp_path, kit_cache):
    import os
    import subprocess

    from conftest import OFFLINE

    from kit.core.jobdir import read_summary

    base = read_summary(trained_job)["base_model"]
    inspect = Path(sys.executable).parent / "inspect"
    cmd = [
        str(inspect),
        "eval",
        "kit/parity",
        "--model",
        f"peft/{trained_job / 'adapter'}",
        "-M",
        f"base={base}",
        "-M",
        "do_sample=false",
        "--limit",
        "10",
        "--max-tokens",
        "8",
        "--log-dir",
        str(tmp_path),
        "--display",
        "none",
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, **OFFLINE, "KIT_CACHE": str(kit_cache)}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from inspect_ai.log import list_eval_logs, read_eval_log

    log = read_eval_log(list_eval_logs(str(tmp_path))[0])
    assert log.status == "success" and log.eval.model == f"peft/{trained_job / 'adapter'}"
    assert log.results.scores[0].metrics["mean"].value == 1.0  # the trained adapter, not the bare base (0.0)


def rss_mib() -> float:
    import os

    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_flat_over_100_adapter_switches(trained_job, rank_sweep):
    """Three adapters (one rank 64, ~0.75 MB) cycled 100 times on one base with room for two,
    so every switch evicts and reloads one; merged and unmerged turns alternate."""
    import torch

    from kit.core.jobdir import read_summary
    from kit.lora.resident import ResidentBase

    resident = ResidentBase(Path(read_summary(trained_job)["base_model"]), "cpu", "fp32", max_adapters=2)
    before = resident.fingerprint()
    adapters = [trained_job / "adapter", rank_sweep / "0" / "adapter", rank_sweep / "1" / "adapter"]
    prompt = resident.tokenizer("Is 12 even or odd?", return_tensors="pt")
    samples, outputs = {}, {}
    for i in range(100):
        with resident.lock, torch.inference_mode():
            name = resident.attach(adapters[i % 3])
            resident.activate(name, merged=i % 2 == 0)
            out = resident.forward_model(name).generate(**prompt, max_new_tokens=4, do_sample=False)
        outputs.setdefault(i % 3, set()).add(tuple(out[0].tolist()))
        if i in (9, 99):
            samples[i] = rss_mib()
    with resident.lock:
        resident.restore()
    assert resident.adapter_loads == 100  # every switch really loaded an adapter
    assert all(len(seen) == 1 for seen in outputs.values()), "each adapter computes the same, merged or not"
    assert len(resident.peft.peft_config) <= 2
    assert samples[99] - samples[9] < 16, samples  # 90 leaked rank-64 loads alone would add ~45 MiB
    assert resident.fingerprint() == before


def test_resident_base_survives_bad_adapters(trained_job, tmp_path):
    from kit.core.errors import KitError
    from kit.core.jobdir import read_summary
    from kit.lora.resident import ResidentBase

    resident = ResidentBase(Path(read_summary(trained_job)["base_model"]), "cpu", "fp32")
    before = resident.fingerprint()
    broken = shutil.copytree(trained_job / "adapter", tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(KitError, match="adapter_model.safetensors.*unreadable"):
        resident.attach(broken)
    name = resident.attach(trained_job / "adapter")  # the next adapter still loads and computes
    assert name in resident.peft.peft_config and resident.fingerprint() == before


def test_vllm_server_rank_rounds_up_to_what_vllm_accepts():
    from kit.core.errors import KitError
    from kit.eval.strategies.vllm import server_rank

    assert server_rank([4], None) == 8
    assert server_rank([8, 64], None) == 64
    assert server_rank([65], None) == 128
    assert server_rank([8], 32) == 32
    with pytest.raises(KitError, match="600"):
        server_rank([600], None)


def _vllm_importable() -> bool:
    import importlib.util

    try:
        import torch
    except ImportError:
        return False
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def servable_job(kit_cache, tmp_path_factory) -> Path:
    args = ["lora.apply_to_output=false", "eval=none", "logger=none", "verify.after_train=false"]
    return train_once(kit_cache, tmp_path_factory, "servable", *args)[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _vllm_importable(), reason="real vLLM needs a CUDA machine with vllm installed")
def test_real_vllm_matches_direct(servable_job, tmp_path):
    """An adapter vLLM serves (no LoRA on the output projection, which vLLM refuses): vLLM's scores
    equal direct's. The default job trains lm_head, so this test trains its own."""
    from kit.core.jobdir import checkpoint_of, job_config, read_summary
    from kit.eval.evaluate import evaluate

    job = copy_job(servable_job, tmp_path / "job")
    summary = read_summary(job)
    scores = {}
    for strategy in ("vllm", "direct"):
        cfg = job_config(job, summary, [f"eval={strategy}", TASKS, "eval.base_scores=false", "eval.dtype=fp32"])
        scores[strategy] = evaluate(cfg, job, Path(summary["base_model"]), checkpoint_of(job, summary)).scores
    assert scores["vllm"] == scores["direct"]
