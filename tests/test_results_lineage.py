"""What researchers look at, read back from a real 2-point sweep (adapter and full checkpoints, W&B
offline): the per-sample tables of every eval run, the artifacts and their lineage edges, the sweep
run's points and samples tables, and the sweep page rendered by headless Chromium."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_kit
from wandb_records import artifacts, run_info, table

from kit.core.identity import base_fingerprint
from kit.core.wandb_tables import SAMPLE_ROWS
from kit.eval.samples import sample_scores

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as root in a closed network: no sandbox, no GPU, no background connections (they are refused here)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def job_summary(sweep_dir: Path, n: int) -> dict:
    return json.loads((sweep_dir / str(n) / "summary.json").read_text())


def run_file(folder: Path, job_type: str) -> Path:
    (found,) = [f for f in folder.glob("wandb/offline-run-*/run-*.wandb") if run_info(f)["job_type"] == job_type]
    return found


def log_samples(paths: list[str]) -> dict:
    """(id, epoch) -> (completion, score) straight from Inspect's reader."""
    from inspect_ai.log import read_eval_log

    out = {}
    for path in paths:
        for s in read_eval_log(path).samples:
            out[(str(s.id), s.epoch)] = (s.output.completion, float(s.scores["exact"].value == "C"))
    return out


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_every_eval_run_has_a_per_sample_table_of_checkpoint_and_base(report_sweep):
    sweep_dir, _ = report_sweep
    for n in (0, 1):
        s = job_summary(sweep_dir, n)
        eval_file = run_file(sweep_dir / str(n), "eval")
        got = table(eval_file, "samples/parity")
        mine, base = log_samples(s["eval"]["logs"]), log_samples(s["eval"]["base_logs"])
        assert len(got["data"]) == len(mine) == 20
        col = {c: i for i, c in enumerate(got["columns"])}
        for row in got["data"]:
            key = (row[col["id"]], row[col["epoch"]])
            assert (row[col["completion"]], row[col["score"]]) == mine[key]
            assert (row[col["base completion"]], row[col["base score"]]) == base[key]
            assert row[col["score - base"]] == mine[key][1] - base[key][1]
            assert row[col["input"]].startswith("Is ") and row[col["target"]] in ("even", "odd")
        summary = run_info(eval_file)["summary"]
        assert summary["samples/parity/samples"] == summary["samples/parity/rows_logged"] == 20
        assert summary["samples/cap_rows_per_task"] == SAMPLE_ROWS


def test_artifacts_link_base_export_checkpoint_and_eval(report_sweep):
    """Export run (the phase that stores the checkpoint): the base in, the checkpoint out; eval run:
    the same checkpoint and base in (same digests). The base is one artifact by content (never its
    weights), the adapter its own files, the full model a fingerprint file only."""
    sweep_dir, _ = report_sweep
    base_digests = set()
    for n, kind, art_type in ((0, "adapter", "lora-adapter"), (1, "full", "model")):
        s = job_summary(sweep_dir, n)
        train = artifacts(run_file(sweep_dir / str(n), "export"))
        evaluated = artifacts(run_file(sweep_dir / str(n), "eval"))
        models = lambda arts, used: [a for a in arts if a["used"] == used and a["type"] != "run_table"]  # noqa: E731
        (out,) = models(train, used=False)
        (base_in,) = models(train, used=True)
        assert out["type"] == art_type and out["name"] == f"{kind}-{s['run_id']}" and out["run_id"] == f"{s['run_id']}-export"
        assert base_in["type"] == "base-model" and base_in["name"].startswith("base-")
        assert models(evaluated, used=False) == []  # the eval run produced no model
        assert {(a["name"], a["digest"]) for a in models(evaluated, used=True)} == {
            (out["name"], out["digest"]),
            (base_in["name"], base_in["digest"]),
        }
        base_digests.add(base_in["digest"])
        fingerprint = base_fingerprint(Path(s["base_model"]))
        assert out["metadata"]["base"]["fingerprint"] == fingerprint
        assert json.loads(Path(base_in["files"]["kit_model.json"]["local_path"]).read_text())["fingerprint"] == fingerprint
        assert list(base_in["files"]) == ["kit_model.json"]  # the base's weights are never part of it
        folder = Path(s["checkpoint"]["path"])
        if kind == "adapter":
            assert out["metadata"]["content_hash"] == s["checkpoint"]["content_hash"]
            assert {p: e["digest"] for p, e in out["files"].items()} == {p.name: md5_b64(p) for p in folder.iterdir()}
        else:
            (entry,) = out["files"].values()
            assert json.loads(Path(entry["local_path"]).read_text())["fingerprint"] == base_fingerprint(folder)
            assert entry["size"] < 10_000  # a fingerprint, not the 650 KB model
    assert len(base_digests) == 1  # one base, one artifact version


def test_sweep_run_has_points_and_samples_tables(report_sweep):
    """``sweep/points``: a row per job, the swept key its own column; ``sweep/samples``: every
    sample's score at every point, the same numbers the paired tests read."""
    sweep_dir, _ = report_sweep
    sweep_file = next(sweep_dir.glob("wandb/offline-run-*/run-*.wandb"))
    info = run_info(sweep_file)
    assert info["config"]["swept"] == ["checkpointer"]
    assert info["config"]["points"] == {"0": {"checkpointer": "adapter"}, "1": {"checkpointer": "full"}}
    points = table(sweep_file, "sweep/points")
    col = {c: i for i, c in enumerate(points["columns"])}
    assert [(r[col["job"]], r[col["checkpointer"]], r[col["verify"]]) for r in points["data"]] == [
        (0, "adapter", "passed"),
        (1, "full", "passed"),
    ]
    for r in points["data"]:
        assert r[col["parity/mean"]] == job_summary(sweep_dir, r[col["job"]])["scores"]["parity"]["mean"]
    samples = table(sweep_file, "sweep/samples")
    col = {c: i for i, c in enumerate(samples["columns"])}
    assert len(samples["data"]) == info["summary"]["sweep/samples_total"] == 20
    for n, label in ((0, "#0 checkpointer=adapter"), (1, "#1 checkpointer=full")):
        paired_input = sample_scores(job_summary(sweep_dir, n)["eval"]["logs"])["parity"]
        assert {(r[col["id"]], r[col["epoch"]]): r[col[f"{label} score"]] for r in samples["data"]} == paired_input
    assert any(k.startswith("sweep/score_vs_checkpointer/parity/mean") for k in info["summary"])


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium not installed (apt-get install chromium)")
def test_sweep_page_renders_the_table_and_a_sample_diff_in_chromium(report_sweep, kit_cache, tmp_path):
    sweep_dir = shutil.copytree(report_sweep[0], tmp_path / "sweep")
    proc = run_kit(["report", str(sweep_dir), "--html"], kit_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = sweep_dir / "sweep_report.html"
    assert f"sweep page: {page}" in proc.stdout
    assert (sweep_dir / "inspect_bundle" / "index.html").is_file()
    listing = json.loads((sweep_dir / "inspect_bundle" / "logs" / "listing.json").read_text())
    logs = {Path(p).name for n in (0, 1) for key in ("logs", "base_logs") for p in job_summary(sweep_dir, n)["eval"][key]}
    assert {Path(name).name for name in listing} == logs  # both jobs' logs and the base's (one per job if both scored it)
    assert "inspect_bundle/index.html" in page.read_text()

    dom = chromium(["--dump-dom", f"{page.as_uri()}#a=base&b=0"], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-rendered="yes"' in html  # the page's script ran to the end
    points = html[html.index('<table id="points">') : html.index("</table>", html.index('<table id="points">'))]
    assert points.count("<tr>") == 3 and points.count("<td>done</td>") == 2
    assert "Verified: 2 of 2 jobs (0 FAILED, 0 not run)." in html  # verify decides whether a score is a result
    s = job_summary(sweep_dir, 0)
    base, mine = log_samples(s["eval"]["base_logs"]), log_samples(s["eval"]["logs"])
    differing = sorted(k[0] for k in mine if mine[k] != base[k])
    shown = sorted(re.findall(r'<tr class="sample[^"]*" data-sample="parity/(\d+)/1">', html))
    assert shown == sorted(differing, key=str) and shown, html[-3000:]
    assert f"{len(differing)} of 20 samples differ" in html

    every = chromium(["--dump-dom", f"{page.as_uri()}#a=0&b=1&all=1"], tmp_path / "profile")
    assert len(re.findall(r'<tr class="sample', every.stdout)) == 20

    shot = Path(os.environ.get("KIT_SCREENSHOT", tmp_path / "sweep_report.png"))
    taken = chromium(
        [f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars", f"{page.as_uri()}#a=base&b=0"],
        tmp_path / "profile",
    )
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr[-2000:]


def test_sweep_page_is_self_contained(report_sweep):
    """Without a browser: every src/href of the page is inside it (a data URI, an anchor, the
    bundle's relative path), and the table has a row per job."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.rows = [], 0

        def handle_starttag(self, tag, attrs):
            self.links += [v for k, v in attrs if k in ("src", "href") and v]
            self.rows += tag == "tr"

    page = Links()
    page.feed((report_sweep[0] / "sweep_report.html").read_text())
    assert page.links and all(v.startswith(("data:", "#", "inspect_bundle/")) for v in page.links), page.links
    assert page.rows >= 3  # the points table: its head and both jobs
