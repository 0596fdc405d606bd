"""Input that used to pass unchecked or fail far from its cause: each now one line naming file, line
and value (dataset rows, nested added keys, sweeps too large to check, task files by absolute path,
Hub look-ups)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from kit.core.config import compose
from kit.core.errors import KitError


@pytest.mark.parametrize(
    "line,needles",
    [
        ("\n", ["line 2", "is empty", "one JSON object per line"]),
        ('{"question": "", "answer": "odd"}\n', ["line 2", "'question'", "is empty"]),
        ('{"question": "Is 3 even?", "answer": "   "}\n', ["line 2", "'answer'", "is empty"]),
        ('{"question": "Is \\ud800 even?", "answer": "odd"}\n', ["line 2", "'question'", "lone UTF-16 surrogate"]),
        ('{"question": "Is \\u0000 even?", "answer": "odd"}\n', ["line 2", "'question'", "NUL character"]),
        ("[" * 100_000 + "]" * 100_000 + "\n", ["line 2", "nested too deeply"]),
    ],
)
def test_dataset_rows_that_used_to_pass_or_fail_late(tmp_path, line, needles):
    from kit.core.data import read_jsonl

    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "Is 2 even?", "answer": "even"}\n' + line)
    with pytest.raises(KitError) as e:
        read_jsonl(str(data), ("question", "answer"))
    message = str(e.value)
    assert str(data) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    "override,part",
    [("+lora.x.y=1", "'x'"), ("+logger.wandb.foo=1", "'wandb'"), ("+trainer.lrr=1", "'lrr'")],
)
def test_nested_added_key_typos_are_refused(override, part):
    from kit.sweep.preflight import check_added_keys

    cfg = compose("train", [override])
    with pytest.raises(KitError, match=f"has no key {part}"):
        check_added_keys(cfg, [override])


def test_a_free_form_mapping_takes_any_name_but_its_values_have_a_schema():
    from kit.sweep.preflight import check_added_keys

    ok = "+phase.modifiers.parity.keywords=[even]"
    check_added_keys(compose("train", ["+experiment=modifiers", ok]), [ok])
    bad = "+phase.modifiers.parity.rnak=4"
    with pytest.raises(KitError, match="has no key 'rnak'"):
        check_added_keys(compose("train", ["+experiment=modifiers", bad]), [bad])


def test_a_sweep_too_large_to_check_is_refused_not_checked_in_part():
    from kit.core.overrides import MAX_POINTS, expand

    assert len(expand(["lora.rank=1,2,4,8", "trainer.lr=1e-3,2e-3"], {})) == 8
    with pytest.raises(KitError, match=f"the sweep has 289 points; .* at most {MAX_POINTS}"):
        expand([f"lora.rank={','.join(str(i) for i in range(1, 18))}", f"trainer.seed={','.join(str(i) for i in range(17))}"], {})


def test_a_task_file_by_absolute_path_loads(tmp_path, monkeypatch):
    from kit.eval.inspect_runner import inspect_spec, load_task_specs

    task = tmp_path / "tasks" / "mine.py"
    task.parent.mkdir()
    task.write_text(
        "from inspect_ai import Task, task\nfrom inspect_ai.dataset import Sample\n"
        "@task\ndef mine():\n    return Task(dataset=[Sample(input='1', target='1')])\n"
    )
    monkeypatch.chdir(tmp_path / "tasks")
    load_task_specs([str(task)])  # before: "Non-relative patterns are unsupported"
    assert inspect_spec(str(task)) == "mine.py" and inspect_spec(f"{task}@mine") == f"{task}@mine"


def test_hub_errors_say_what_went_wrong(monkeypatch):
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    from kit.core.model.resolve import hub_error

    cfg = OmegaConf.create({"hf_id": "org/name", "revision": None, "cache_dir": None})
    offline = str(hub_error(LocalEntryNotFoundError("not cached"), cfg, allow=False))
    assert "not found locally" in offline and "KIT_ALLOW_NETWORK=1" in offline
    online = str(hub_error(LocalEntryNotFoundError("no answer"), cfg, allow=True))
    assert "could not be reached" in online and "KIT_ALLOW_NETWORK" not in online
    assert "not a Hugging Face repo id" in str(hub_error(HFValidationError("bad"), cfg, allow=False))
    assert json.dumps(str(hub_error(PermissionError(13, "Permission denied"), cfg, allow=False))).count("Permission denied") == 1
