"""One identity per run: the run id (a hash of the resolved config) and the adapters'
content hashes, refused by ``kit eval`` and ``kit serve`` once an adapter changed."""

import json
import shutil

import pytest
from conftest import copy_job, run_kit

from kit.commands.status import job_state
from kit.core.config import compose
from kit.core.identity import adapter_hash, base_fingerprint, run_id
from kit.runtime.registry import FORMAT


def test_run_id_is_the_resolved_config_without_runtime_keys_or_secrets():
    base = run_id(compose("train", []))
    assert base == run_id(compose("train", []))  # deterministic
    assert run_id(compose("train", ["launcher.detach=true"])) == base  # how it was submitted: not the run
    assert run_id(compose("train", ["hydra.sweep.dir=/elsewhere"], hydra_cfg=True)) == base  # where: not the run
    assert run_id(compose("train", ["lora.rank=16"])) != base
    assert run_id({"a": 1, "wandb": {"api_key": "s3cret"}}) == run_id({"a": 1, "wandb": {}})


@pytest.mark.parametrize(
    "summary,slurm,expected",
    [
        ({"status": "done"}, {"state": "CANCELLED"}, "done"),
        (None, {"state": "PENDING", "restarts": 0}, "pending"),
        (None, {"state": "PENDING", "restarts": 1}, "preempted"),
        ({"status": "running"}, {"state": "RUNNING", "restarts": 0}, "running"),
        ({"status": "running"}, {"state": "CANCELLED", "restarts": 0}, "failed"),
        ({"status": "failed", "error": "boom"}, {"state": "COMPLETED", "restarts": 0}, "failed"),
        ({"status": "running"}, {"state": "GONE", "restarts": 0}, "lost"),
        (None, None, "lost"),
        ({"status": "running"}, {"state": "UNKNOWN", "restarts": 0}, "unknown"),
    ],
)
def test_job_state_from_summary_and_slurm(summary, slurm, expected):
    assert job_state({}, summary, slurm)[0] == expected


@pytest.mark.slow
def test_changed_adapter_is_refused_by_eval_and_serve(rank_sweep, tiny_base, kit_cache, tmp_path):
    job = copy_job(rank_sweep / "0", tmp_path / "job")
    summary = json.loads((job / "summary.json").read_text())
    adapter = job / "adapter"
    assert summary["checkpoint"]["content_hash"] == adapter_hash(adapter)
    assert summary["run_id"] and len(summary["run_id"]) == 16
    # a registry serving this adapter under a name, as phase=modifier writes it
    registry = tmp_path / "registry"
    shutil.copytree(adapter, registry / "modifiers" / "m1" / "adapter")
    entry = {
        "name": "m1",
        "path": "modifiers/m1/adapter",
        "rank": 8,
        "base_fingerprint": base_fingerprint(tiny_base),
        "content_hash": adapter_hash(adapter),
    }
    (registry / "modifiers.json").write_text(
        json.dumps(
            {
                "format": FORMAT,
                "base": {"path": str(tiny_base), "fingerprint": entry["base_fingerprint"]},
                "modifiers": [entry],
                "router": {"learned": None},
            }
        )
    )

    config = adapter / "adapter_config.json"  # same weights, another alpha: another adapter
    config.write_text(config.read_text().replace('"lora_alpha"', '"lora_alpha_old": 0, "lora_alpha"'))
    served = registry / "modifiers" / "m1" / "adapter" / "adapter_config.json"
    served.write_text(config.read_text())
    before = (job / "summary.json").read_text()

    proc = run_kit(["eval", str(job), "eval=direct", "tasks.limit=2", "logger=none"], kit_cache, tmp_path)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: error:")]
    assert "changed since it was recorded" in errors[0] and summary["checkpoint"]["content_hash"][:12] in errors[0]
    assert (job / "summary.json").read_text() == before  # nothing scored under the old identity

    proc = run_kit(["serve", f"serve.registry={registry}", "serve.port=0"], kit_cache, tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "modifier 'm1': adapter" in proc.stderr and "changed since it was recorded" in proc.stderr
