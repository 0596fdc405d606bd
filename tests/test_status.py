"""``kit status`` reads any sweep: one a submitit launcher recorded in its manifest, and one run
in-process (``hydra/launcher=basic``: no manifest), from its job dirs' summaries."""

from __future__ import annotations

import json

from kit.commands.status import main


def test_status_of_an_in_process_sweep_reads_its_summaries(tmp_path, capsys):
    for n, (status, rank) in enumerate([("done", 4), ("unverified", 8), ("failed", 16)]):
        job = tmp_path / str(n)
        job.mkdir()
        summary = {"status": status, "overrides": [f"lora.rank={rank}"], "job_dir": str(job), "run_id": f"id{n}"}
        if status != "done":
            summary["error"] = f"{status} on purpose"
        (job / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path)]) == 0  # before: "manifest.json not found"
    out = capsys.readouterr().out
    assert "| 0 | lora.rank=4 | id0 |" in out and "| unverified |" in out and "failed on purpose" in out
    assert out.strip().splitlines()[-1] == "1 done, 1 unverified, 1 failed"
    assert main([str(tmp_path), "--rerun-failed"]) == 2  # resumed by its own command, said in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same hydra.sweep.dir" in err[0]


def test_report_and_collect_refuse_a_sweep_dir_another_process_writes(tmp_path, capsys):
    import subprocess
    import sys

    from kit.__main__ import main as kit_main

    job = tmp_path / "0"
    job.mkdir()
    (job / "summary.json").write_text(json.dumps({"status": "done", "overrides": ["lora.rank=4"], "job_dir": str(job)}))
    hold = (
        "import sys, time, pathlib; from kit.core.locks import hold; "
        "hold(pathlib.Path(sys.argv[1]), 'sweep dir'); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in ("report", "collect"):
            assert kit_main([command, str(tmp_path)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "is in use by pid" in err[0], err
        assert not (tmp_path / "sweep_summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
