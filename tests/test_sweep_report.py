"""The sweep summary of a real sweep over both checkpointers, run through
``hydra/launcher=submitit_local``: files, storage measured vs estimated, W&B, ``kit report``."""

import json
import struct
from pathlib import Path

import pytest
from conftest import run_kit
from wandb_records import run_info

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(report_sweep):
    return report_sweep  # conftest: the sweep is shared with test_results_lineage.py


def summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep_summary.json").read_text())


def tensor_bytes(folder: Path) -> int:
    """Bytes of the tensors in a folder's safetensors files (file size minus header)."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            (header,) = struct.unpack("<Q", fh.read(8))
        total += f.stat().st_size - 8 - header
    return total


def test_files_and_printed_table(sweep):
    sweep_dir, proc = sweep
    md = (sweep_dir / "sweep_summary.md").read_text()
    assert md.strip() in proc.stdout
    assert "| 0 | adapter | done |" in md and "| 1 | full | done |" in md
    rows = summary(sweep_dir)["jobs"]
    assert [r["checkpoint_kind"] for r in rows] == ["adapter", "full"]
    for r in rows:
        job = json.loads(Path(r["job_dir"], "summary.json").read_text())
        assert r["scores"]["parity/mean"] == job["scores"]["parity"]["mean"]
        assert r["checkpoint_bytes"] == job["checkpoint"]["bytes"] and r["train_s"] == job["timings"]["train_s"]
        # paired test against the base on the same 20 samples, read back from both Inspect logs
        vs_base = r["paired"]["parity/mean"]["vs_base"]
        assert vs_base["test"] == "mcnemar" and vs_base["n"] == 20 and 0 <= vs_base["p"] <= 1
    assert "| vs base: p | vs best: p |" in md
    png = (sweep_dir / "sweep_summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200


def test_vs_base_reads_each_jobs_own_base_logs_and_says_when_it_cannot(sweep, tmp_path):
    """Each job keeps its copy of the base's logs (inspect_logs/base/): a moved sweep dir still
    tests against the base; a job whose copy is gone says so in the row, the table and the text."""
    import shutil

    from kit.sweep.report import markdown
    from kit.sweep.rows import build

    sweep_dir, _ = sweep
    moved = tmp_path / "sweep"
    shutil.copytree(sweep_dir, moved)
    for n in ("0", "1"):
        logs = json.loads((moved / n / "summary.json").read_text())["eval"]["base_logs"]
        assert logs and all(Path(p).parent == sweep_dir / n / "inspect_logs" / "base" for p in logs)
    for log in (moved / "0" / "inspect_logs" / "base").glob("*.eval"):
        log.unlink()
    result = build(moved)
    first, second = (r["paired"]["parity/mean"]["vs_base"] for r in result["jobs"])
    assert second["test"] == "mcnemar" and second["n"] == 20  # read from the moved dir
    assert first["skipped"].startswith("base log ") and first["skipped"].endswith("is missing")
    assert str(moved / "0" / "inspect_logs" / "base") in first["skipped"]
    md = markdown(result)
    assert "| not run |" in md and "Paired tests not run:" in md and "vs base: not run: base log" in md


def test_other_checkpointer_estimates_match_what_the_other_job_measured(sweep):
    """adapter job's full-model estimate == the full job's model tensors, and the reverse."""
    sweep_dir, _ = sweep
    adapter_row, full_row = summary(sweep_dir)["jobs"]
    assert adapter_row["other_kind"] == "full" and full_row["other_kind"] == "adapter"
    assert adapter_row["other_checkpoint_bytes"] == tensor_bytes(sweep_dir / "1" / "hf_model")
    assert full_row["other_checkpoint_bytes"] == tensor_bytes(sweep_dir / "0" / "adapter")
    assert "estimate from the base's size" in adapter_row["other_how"]
    assert "estimate from the LoRA shapes" in full_row["other_how"]
    totals = summary(sweep_dir)["totals"]
    full = full_row["checkpoint_bytes"] + adapter_row["other_checkpoint_bytes"]
    adapter = adapter_row["checkpoint_bytes"] + full_row["other_checkpoint_bytes"]
    assert totals["full_vs_adapter"] == pytest.approx(full / adapter) and totals["full_vs_adapter"] > 2
    assert totals["persistent_bytes"] == adapter_row["persistent_bytes"] + full_row["persistent_bytes"]


def test_wandb_sweep_run_and_job_runs_share_the_group(sweep):
    sweep_dir, _ = sweep
    jobs = [run_info(f) for f in sweep_dir.glob("*/wandb/offline-run-*/run-*.wandb")]
    (summary_run,) = [run_info(f) for f in sweep_dir.glob("wandb/offline-run-*/run-*.wandb")]
    assert len(jobs) == 8 and {i["group"] for i in jobs} == {summary_run["group"]}
    assert sorted(i["job_type"] for i in jobs) == ["eval", "eval", "export", "export", "train", "train", "verify", "verify"]
    assert {i["name"] for i in jobs} >= {
        "checkpointer=full,trainer.epochs=1,trainer.max_steps_per_epoch=10,tasks.limit=20,logger.tags=[report_test]-eval"
    }
    assert all(i["tags"] == ["report_test"] for i in [*jobs, summary_run])
    assert summary_run["job_type"] == "sweep"
    assert summary_run["summary"]["sweep/table/_type"] == "table-file"
    assert summary_run["summary"]["sweep/table/nrows"] == 2
    assert summary_run["summary"]["sweep/plot/_type"] == "image-file"
    assert summary_run["summary"]["sweep/done"] == 2


def test_kit_report_rebuilds_the_same_summary(sweep, kit_cache, tmp_path):
    sweep_dir, _ = sweep
    before = summary(sweep_dir)
    for name in ("sweep_summary.json", "sweep_summary.md", "sweep_summary.png"):
        (sweep_dir / name).unlink()
    proc = run_kit(["report", str(sweep_dir)], kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(sweep_dir) == before
    assert (sweep_dir / "sweep_summary.md").read_text().strip() in proc.stdout
    assert (sweep_dir / "sweep_summary.png").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["report"], "the following arguments are required: sweep_dir"),
        (["report", "/nonexistent/sweep"], "sweep dir '/nonexistent/sweep' does not exist"),
    ],
)
def test_kit_report_bad_sweep_dir(args, needle, kit_cache, tmp_path):
    proc = run_kit(args, kit_cache, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kit: error:") and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_kit_report_on_a_dir_that_is_no_sweep(kit_cache, tmp_path):
    proc = run_kit(["report", str(tmp_path)], kit_cache, tmp_path)
    assert proc.returncode == 2 and "holds no job dirs" in proc.stderr
    assert not (tmp_path / "sweep_summary.json").exists()
