"""The bundled demos show what they claim, run exactly as the README says (W&B and verify off).

- ``+experiment=rank_sweep -m``: every rank learns the held-out parity task, clearly above the
  untrained base, and the sweep table says so with a paired test on the same samples.
- ``+experiment=modifiers``: each modifier beats the base on its own task and not on the others.
"""

import json

import pytest
from conftest import run_kit

pytestmark = pytest.mark.slow
QUIET = ["logger=none", "verify.after_train=false"]
SLOW = 3600  # seconds: a few minutes on an idle 2-core CPU, far more on a loaded one


def test_rank_sweep_every_rank_learns_the_task(kit_cache, tmp_path):
    """The demo's settings at ranks 16 and 64, the two ends that sat at 0.50 before (rank 8 is the default
    job's own setting; the full 4-rank table is in docs/jobs-and-sweeps.md). Two points keep CI's time down."""
    sweep = tmp_path / "sweep"
    args = ["train", "+experiment=rank_sweep", "-m", "lora.rank=16,64", *QUIET, f"hydra.sweep.dir={sweep}"]
    proc = run_kit(args, kit_cache, tmp_path, timeout=SLOW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((sweep / "sweep_summary.json").read_text())["jobs"]
    ranks = {r["job"]: dict(o.split("=", 1) for o in r["overrides"])["lora.rank"] for r in rows}
    assert sorted(ranks.values(), key=int) == ["16", "64"]
    for r in rows:
        score, base = r["scores"]["parity/mean"], r["base_scores"]["parity/mean"]
        assert score >= 0.9 and score - base >= 0.5, f"rank {ranks[r['job']]}: {score} vs base {base}"
        vs_base = r["paired"]["parity/mean"]["vs_base"]
        # 100 held-out samples, read back from both Inspect logs: beyond noise
        assert vs_base["test"] == "mcnemar" and vs_base["n"] == 100 and vs_base["p"] < 1e-6
        assert vs_base["diff"] == pytest.approx(score - base)
    table = (sweep / "sweep_summary.md").read_text()
    assert "| vs base: p | vs best: p |" in table and "<0.001 (+" in table and "McNemar" in table


@pytest.fixture(scope="module")
def modifiers(kit_cache, tmp_path_factory) -> tuple[dict, dict]:
    """``+experiment=modifiers`` as bundled: every modifier scored on every task; (scores, base)."""
    work = tmp_path_factory.mktemp("modifiers")
    job = work / "job"
    proc = run_kit(["train", "+experiment=modifiers", *QUIET, f"hydra.run.dir={job}"], kit_cache, work, timeout=SLOW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((job / "summary.json").read_text())
    return ({k: v["mean"] for k, v in summary["scores"].items()}, {k: v["mean"] for k, v in summary["base_scores"].items()})


TASKS = ("parity", "last_digit", "reverse")  # each modifier's own task has its name


def beats_base_on_own_task_only(modifier: str, scores: dict, base: dict) -> None:
    own = f"{modifier}/{modifier}"
    assert scores[own] >= 0.8 and scores[own] - base[own] >= 0.5, (own, scores[own], base[own])
    for other in set(TASKS) - {modifier}:
        key = f"{modifier}/{other}"
        assert scores[key] <= base[key] + 0.1, (key, scores[key], base[key])


def test_modifiers_are_scored_on_every_task(modifiers):
    scores, base = modifiers
    assert set(scores) == {f"{m}/{t}" for m in TASKS for t in TASKS}
    assert set(base) == set(scores)


@pytest.mark.parametrize("modifier", TASKS)
def test_modifier_beats_the_base_on_its_own_task_only(modifiers, modifier):
    beats_base_on_own_task_only(modifier, *modifiers)
