"""A 2-point rank sweep through the real CLI (basic launcher)."""

import json

import pytest
from conftest import run_kit
from wandb_records import run_info

pytestmark = pytest.mark.slow


def test_two_point_rank_sweep(kit_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_kit(
        [
            "train",
            "+experiment=rank_sweep",
            "-m",
            "lora.rank=4,16",
            f"hydra.sweep.dir={sweep}",
            "trainer.epochs=2",
            "tasks.limit=10",
        ],
        kit_cache,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    summaries = [json.loads((j / "summary.json").read_text()) for j in jobs]
    assert [s["status"] for s in summaries] == ["done", "done"]
    ranks = [json.loads((j / "adapter" / "adapter_config.json").read_text())["r"] for j in jobs]
    assert ranks == [4, 16]
    # bigger rank, bigger adapter; same base scores from one cached evaluation
    assert summaries[1]["checkpoint"]["bytes"] > summaries[0]["checkpoint"]["bytes"]
    assert summaries[1]["eval"]["base_scores_cached"] is True
    assert summaries[0]["base_scores"] == summaries[1]["base_scores"]
    # one table at the end, one row per job, keyed by the swept value
    table = (sweep / "sweep_summary.md").read_text()
    assert "| # | lora.rank | status |" in table and "| 0 | 4 | done |" in table and "| 1 | 16 | done |" in table
    assert table.strip() in proc.stdout
    # W&B: all runs of the sweep share one group, tagged by the experiment
    infos = [run_info(f) for f in sweep.glob("*/wandb/offline-run-*/run-*.wandb")]
    assert len(infos) == 8 and len({i["group"] for i in infos}) == 1
    assert all(i["tags"] == ["rank_sweep"] for i in infos)
    assert sorted(i["job_type"] for i in infos) == ["eval", "eval", "export", "export", "train", "train", "verify", "verify"]
