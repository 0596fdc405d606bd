"""Bad input: one line naming the bad value, exit status 2, no traceback, nothing written.

The entry point is called in-process (``kit.__main__.main``), as ``python -m kit`` calls it; one test
runs the real CLI in a subprocess (slow layer) to show the process exits the same way."""

from types import SimpleNamespace

import pytest
from conftest import run_kit

from kit.__main__ import main as kit_main


def run_in_process(args, capsys) -> SimpleNamespace:
    code = kit_main(args)
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def assert_one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kit: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert needle in lines[0]
    if needle != "trian":
        assert "unknown command" not in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval=nosuch"], "nosuch"),
        (["lora.rank=abc"], "lora.rank"),
        (["model.path=/no/such/model"], "/no/such/model"),
        (["tasks.specs=[nosuch_task_xyz]"], "nosuch_task_xyz"),
    ],
)
def test_bad_value_one_line(args, needle, kit_cache, tmp_path, capsys):
    job = tmp_path / "job"
    proc = run_in_process(["train", *args, f"hydra.run.dir={job}"], capsys)
    assert_one_line_error(proc, needle)
    assert not job.exists()  # checked before Hydra made any job dir


def test_dataset_that_does_not_parse(kit_cache, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{not json\n')
    proc = run_in_process(["train", f"dataset.train_file={bad}", f"hydra.run.dir={tmp_path / 'job'}"], capsys)
    assert_one_line_error(proc, "line 2")


def test_pickled_only_model_refused(kit_cache, tmp_path, tiny_base, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    proc = run_in_process(["train", f"model.path={folder}", f"hydra.run.dir={tmp_path / 'job'}"], capsys)
    assert_one_line_error(proc, "allow_pickle")


def test_unknown_command(capsys):
    assert_one_line_error(run_in_process(["trian"], capsys), "trian")


@pytest.mark.slow
def test_the_real_cli_process_exits_2_in_one_line(kit_cache, tmp_path):
    job = tmp_path / "job"
    proc = run_kit(["train", "lora.rank=abc", f"hydra.run.dir={job}"], kit_cache, tmp_path)
    assert_one_line_error(proc, "lora.rank")
    assert not job.exists()
