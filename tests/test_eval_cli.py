"""``python -m kit eval`` on a job dir and on a sweep dir, as a user runs it."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import copy_job, run_kit
from wandb_records import artifacts, run_info

pytestmark = pytest.mark.slow


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


@pytest.fixture(scope="module")
def sweep_copy(rank_sweep, tmp_path_factory) -> Path:
    return copy_job(rank_sweep, tmp_path_factory.mktemp("eval_cli") / "sweep")


def test_sweep_eval_direct_appends_results_and_loads_the_base_once(sweep_copy, kit_cache):
    before = {job: summary(sweep_copy / job) for job in ("0", "1")}
    proc = run_kit(
        ["eval", str(sweep_copy), "eval=direct", "tasks.specs=[kit/parity,kit/parity_long]", "tasks.limit=10", "logger=wandb"],
        kit_cache,
        sweep_copy,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        s = summary(sweep_copy / job)
        old = before[job]
        assert s["evals"][: len(old["evals"])] == old["evals"]  # earlier entries untouched
        entry = s["evals"][-1]
        assert entry["command"] == "kit eval" and entry["strategy"] == "direct"
        assert set(entry["scores"]) == {"parity", "parity_long"}
        assert entry["eval"]["base_loads_in_process"] == 1  # one load for both adapters and the base scores
        assert entry["eval"]["temp_peak_bytes"] == 0
        runs = [run_info(f) for f in (sweep_copy / job / "wandb").glob("offline-run-*/run-*.wandb")]
        evals = [r for r in runs if r["job_type"] == "eval"]
        assert len(evals) == 1 and evals[0]["group"] == s["group"]
        assert evals[0]["summary"]["scores/parity/mean"] == entry["scores"]["parity"]["mean"]
        # the kit eval run (its own W&B id) uses the artifact the job's export run names by the job's run id
        files = (sweep_copy / job / "wandb").glob("offline-run-*/run-*.wandb")
        (eval_file,) = [f for f in files if run_info(f)["job_type"] == "eval"]
        used = {a["name"]: a for a in artifacts(eval_file) if a["used"]}
        assert used[f"adapter-{s['run_id']}"]["metadata"]["content_hash"] == s["checkpoint"]["content_hash"]


def test_sweep_eval_vllm_one_server_for_all_adapters(sweep_copy, kit_cache, tmp_path):
    record = tmp_path / "standin.jsonl"
    os.environ["KIT_VLLM_STANDIN_LOG"] = str(record)
    try:
        proc = run_kit(
            [
                "eval",
                str(sweep_copy),
                "eval=vllm",
                "eval.vllm.server=standin",
                "eval.vllm.max_loras=2",
                "eval.vllm.gpu_memory_utilization=0.5",
                "tasks.limit=5",
                "logger=none",
            ],
            kit_cache,
            sweep_copy,
        )
    finally:
        del os.environ["KIT_VLLM_STANDIN_LOG"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in record.read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 1, "one server for the whole sweep"
    argv = starts[0]["argv"]
    flag = lambda name: argv[argv.index(name) + 1]
    assert argv[:2] == ["serve", summary(sweep_copy / "0")["base_model"]]
    assert "--enable-lora" in argv and flag("--max-lora-rank") == "64"  # the sweep's largest rank
    assert flag("--max-loras") == "2" and flag("--gpu-memory-utilization") == "0.5"
    assert flag("--host") == "127.0.0.1" and flag("--tensor-parallel-size") == "1"
    assert "--api-key" not in argv  # the key reaches the server through $VLLM_API_KEY, never argv
    adapters = {str(sweep_copy / job / "adapter") for job in ("0", "1")}
    loads = [e["body"] for e in events if e.get("path") == "/v1/load_lora_adapter"]
    assert {b["lora_path"] for b in loads} == adapters
    probes = [e["body"] for e in events if e.get("path") == "/v1/completions"]  # base and adapter, logprobs
    assert {b["model"] for b in probes} == adapters | {summary(sweep_copy / "0")["base_model"]}
    assert all(b["logprobs"] == 5 and b["max_tokens"] == 1 for b in probes)
    chats = [e["body"] for e in events if e.get("path") == "/v1/chat/completions"]
    assert {b["model"] for b in chats} == adapters and len(chats) == 10
    assert all(b["max_tokens"] == 8 and b["temperature"] == 0.0 for b in chats)
    for job in ("0", "1"):
        entry = summary(sweep_copy / job)["evals"][-1]
        assert entry["strategy"] == "vllm-standin" and entry["eval"]["server"]["max_lora_rank"] == 64
        change = entry["eval"]["adapter_logit_change"]  # the server's logprobs moved (or its top tokens changed)
        assert change["probes"] == 3 and (change["max_abs_logprob_diff"] > 0 or change["probes_with_other_top_tokens"] > 0)
        assert "--api-key" not in entry["eval"]["server"]["command"]  # no key in argv, so none written down


def damage(job: Path, how: str) -> Path:
    weights = job / "adapter" / "adapter_model.safetensors"
    if how == "no_config":
        (job / "adapter" / "adapter_config.json").unlink()
        return job / "adapter" / "adapter_config.json"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return weights
    # an adapter for another base: every lora_A expects a 32-wide input instead of 64
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: (v[:, :32].contiguous() if ".lora_A." in k else v) for k, v in tensors.items()}, weights)
    return weights


def forget_content_hash(job: Path) -> None:
    """As a job from before adapters carried a content hash: what is checked is the folder itself."""
    s = summary(job)
    s["checkpoint"].pop("content_hash", None)
    (job / "summary.json").write_text(json.dumps(s))


@pytest.mark.parametrize("strategy", ["direct", "merge"])
def test_broken_adapters_one_line_each_nothing_touched_others_evaluated(rank_sweep, tmp_path, kit_cache, strategy):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    bad_files = {}
    for i, how in enumerate(["no_config", "truncated", "other_base"]):
        job = copy_job(rank_sweep / "0", sweep / str(i))
        bad_files[str(i)] = damage(job, how)
        forget_content_hash(job)  # else the identity check refuses it first (tests/test_run_identity.py)
    copy_job(rank_sweep / "1", sweep / "3")  # a good adapter after the bad ones
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    proc = run_kit(["eval", str(sweep), f"eval={strategy}", "tasks.limit=5", "logger=none"], kit_cache, sweep)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kit: error:")]
    for job, bad in bad_files.items():
        mine = [line for line in errors if line.startswith(f"kit: error: {job}: ")]
        assert len(mine) == 1 and str(bad) in mine[0], errors
    assert "does not fit this base" in next(line for line in errors if line.startswith("kit: error: 2: "))
    for path, data in before.items():  # the broken jobs: every file as it was (a lock names its last holder)
        if (path.parent.name in bad_files or path.parent.parent.name in bad_files) and path.name != ".kit.lock":
            assert path.read_bytes() == data, path
    assert summary(sweep / "3")["evals"][-1]["strategy"] == strategy  # the base stayed usable
    assert not list(sweep.rglob("kit-merged-*")), "merge's temporary folder is always removed"


def test_eval_bad_target_and_bad_override(tmp_path, kit_cache, rank_sweep):
    proc = run_kit(["eval", str(tmp_path / "nowhere")], kit_cache, tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("kit: error:") and "nowhere" in proc.stderr
    proc = run_kit(["eval", str(rank_sweep), "eval=bogus"], kit_cache, tmp_path)
    assert proc.returncode == 2 and "bogus" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_full_checkpoint_is_evaluated_as_plain_hf_by_every_strategy(full_job, kit_cache, tmp_path):
    job = copy_job(full_job, tmp_path / "full")
    scores = {}
    for strategy in ("direct", "merge_in_memory", "vllm eval.vllm.server=standin"):
        proc = run_kit(["eval", str(job), *f"eval={strategy}".split(), "tasks.limit=10", "logger=none"], kit_cache, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        entry = summary(job)["evals"][-1]
        scores[strategy] = entry["scores"]
        assert entry["eval"]["temp_peak_bytes"] == 0
    assert len({json.dumps(s, sort_keys=True) for s in scores.values()}) == 1
    shutil.rmtree(job)
