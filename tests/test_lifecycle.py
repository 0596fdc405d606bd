"""``phase=lifecycle`` (``+experiment=lifecycle``): one job trains parity and merges it, compresses the merged
model to NF4, trains two modifiers over the NF4 weights, serves them in process and ends with one table.
The table is checked against what the job stored (bytes of every file), what it scored (the evals and the
registry), what it compressed (the merged model, not the base) and what it served (through the real
``openai`` client, the same answer Inspect logged for that sample); the projection formulas give back the
measured bytes exactly when the target is the measured model itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import kit_in_process, run_kit

SHORT = ["tasks.limit=4", "trainer.epochs=2", "phase.modifiers.last_digit.epochs=2", "phase.modifiers.reverse.epochs=2"]


@pytest.fixture(scope="module")
def lifecycle(kit_cache, tmp_path_factory):
    where = tmp_path_factory.mktemp("lifecycle")
    job = where / "job"
    r = run_kit(["train", "+experiment=lifecycle", "logger=none", *SHORT, f"hydra.run.dir={job}"], kit_cache, where)
    assert r.returncode == 0, r.stderr[-4000:]
    return job, json.loads((job / "summary.json").read_text()), r.stdout


def data_bytes(path: Path) -> int:
    """A safetensors file's tensor bytes (its size less the header)."""
    with open(path, "rb") as f:
        return path.stat().st_size - 8 - int.from_bytes(f.read(8), "little")


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@pytest.mark.slow
def test_the_table_is_what_the_job_stored_scored_and_served(lifecycle):
    from inspect_ai.log import read_eval_log

    job, s, stdout = lifecycle
    assert s["status"] == "done" and s["verify"]["passed"]
    rows = {r["step"]: r for r in s["lifecycle"]["steps"]}
    assert list(rows) == [
        "base",
        "trained + merged",
        "compressed (nf4)",
        "modifier last_digit",
        "modifier reverse",
        "served (model=auto)",
    ]
    base = Path(s["base_model"])
    assert rows["base"]["bytes"] == sum(f.stat().st_size for f in base.glob("*.safetensors"))
    assert rows["trained + merged"]["bytes"] == sum(f.stat().st_size for f in (job / "merged").glob("*.safetensors"))
    assert rows["compressed (nf4)"]["bytes"] == (job / "compressed" / "compressed.safetensors").stat().st_size
    registry = {m["name"]: m for m in json.loads((job / "modifiers.json").read_text())["modifiers"]}
    for name, m in registry.items():
        assert rows[f"modifier {name}"]["bytes"] == tree_bytes(job / m["path"]) == m["bytes"]

    # scores: the merged row is the training eval; the compressed row is the base every modifier was scored against
    trained = next(e for e in s["evals"] if e["command"] == "train" and e["eval"]["checkpoint"]["path"] == str(job / "merged"))
    assert rows["trained + merged"]["scores"] == trained["scores"]
    assert rows["trained + merged"]["before"] == rows["base"]["scores"]
    for name, m in registry.items():
        assert rows["compressed (nf4)"]["scores"]["parity"] == m["base_scores"]["parity"]
        assert rows[f"modifier {name}"]["scores"] == m["scores"]

    # paired tests against the step before, on the same 4 samples per task, agree with the means
    for step in ("trained + merged", "compressed (nf4)", "modifier last_digit", "modifier reverse"):
        paired, row = rows[step]["paired"], rows[step]
        assert set(paired) == {"parity", "last_digit", "reverse"}, step
        for task, t in paired.items():
            assert t["test"] == "mcnemar" and t["n"] == 4
            assert t["diff"] == pytest.approx(row["scores"][task]["mean"] - row["before"][task]["mean"])

    # each step built on the one before: compressed from merged/, modifiers over dequantized/
    manifest = json.loads((job / "compressed" / "kit_compress.json").read_text())
    assert manifest["source"]["path"] == str(job / "merged")
    assert json.loads((job / "modifiers.json").read_text())["base"]["path"] == str(job / "dequantized")

    # served: by name, each answered by itself with the completion Inspect logged for that sample
    for name in registry:
        q = rows[f"modifier {name}"]["served"]
        assert q["answered_by"] == name and q["task"] == f"kit/{name}"
        log = next(p for p in (job / "modifiers" / name / "inspect_logs").glob(f"*_{name.replace('_', '-')}_*.eval"))
        sample = next(x for x in read_eval_log(str(log)).samples if x.id == 0)
        assert q["answer"] == sample.output.completion
    routed = {q["task"]: q["answered_by"] for q in rows["served (model=auto)"]["routed"]}
    assert routed == {"kit/parity": "base", "kit/last_digit": "last_digit", "kit/reverse": "reverse"}
    table = (job / "lifecycle.md").read_text().strip()
    assert table in stdout and table.count("\n") == len(rows) + 1


@pytest.mark.slow
def test_projection_onto_the_measured_model_gives_back_its_bytes(lifecycle):
    from kit.core.model import projection
    from kit.core.model.loader import meta_model

    job, s, _ = lifecycle
    tiny = meta_model(Path(s["base_model"]))
    assert projection.parameters(tiny) * projection.target_dtype_bytes(tiny) == data_bytes(
        Path(s["base_model"]) / "model.safetensors"
    )
    per_q = projection.bytes_per_quantized_weight(job / "compressed", job / "merged")
    assert projection.compressed_bytes(tiny, "nf4", 64, 16, per_q) == data_bytes(job / "compressed" / "compressed.safetensors")
    for m in s["modifiers"].values():
        adapter = job / m["path"]
        targets, rank = projection.adapter_targets(adapter)
        assert projection.lora_weights(tiny, targets, rank) == projection.bytes_per_lora_weight(adapter)[1]
    target = s["lifecycle"]["projected_to"]
    assert target["model_type"] == "llama" and target["parameters"] == 8_030_261_248  # Llama-3.1-8B's architecture
    big = {r["step"]: r["projected_bytes"] for r in s["lifecycle"]["steps"] if "projected_bytes" in r}
    assert big["base"] == 8_030_261_248 * 2  # bf16
    assert big["compressed (nf4)"] < big["base"] / 3 and 0 < big["modifier reverse"] < big["base"] / 100


def test_lifecycle_refuses_a_modifier_base_that_is_not_the_compressed_weights(kit_cache, tmp_path, monkeypatch):
    r = kit_in_process(["train", "+experiment=lifecycle", "phase.compress.dequantized=false"], kit_cache, tmp_path, monkeypatch)
    assert r.returncode == 2 and "phase.compress.dequantized=true" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.rglob("summary.json"))
