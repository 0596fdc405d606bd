"""What a user sees: progress lines once, a result at the end, a quiet console, one-line
errors for the config edges, and W&B runs whose workspace groups without clicking."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import run_kit
from wandb_records import records, run_info

from kit.core import log as kit_log
from kit.core.errors import KitError

# Lines the stack once printed on every run (kit.core.log drops them); none may come back.
NOISE = (
    "Skipping import of cpp extensions",
    "Detected no triton",
    "wait_exponential_jitter",
    "The 'initial' parameter is deprecated",
    "generation flags are not valid",
    "was active which is now deleted",
    "\x1b[A",
    "Weave",
    "'set_vital' is deprecated",
    "Profiling disabled",
)


# ---------------------------------------------------------------- logging


@pytest.fixture
def hydra_like_root():
    """A root logger with a console and a job-log file handler, as Hydra's job logging leaves it."""
    root = logging.getLogger()
    console, stream = None, io.StringIO()
    console = logging.StreamHandler(stream)
    root.addHandler(console)
    yield root, stream
    root.removeHandler(console)


def test_kit_lines_show_once_under_hydra(hydra_like_root, tmp_path):
    root, root_stream = hydra_like_root
    job_log = logging.FileHandler(tmp_path / "train.log")
    root.addHandler(job_log)
    try:
        logger = kit_log.setup()
        kit_log.setup()  # every job of a multirun calls it again
        ours = [h for h in logger.handlers if getattr(h, "_kit", False)]
        assert len(ours) == 1
        stream = io.StringIO()
        ours[0].setStream(stream)
        kit_log.get("kit.job.pipeline").info("train done in %.1f s", 1.25)
        kit_log.get("kit.job.pipeline").warning("verify FAILED")
    finally:
        root.removeHandler(job_log)
        job_log.close()
        logger.removeHandler(job_log)
    assert stream.getvalue().splitlines() == ["kit: train done in 1.2 s", "kit: warning: verify FAILED"]
    assert root_stream.getvalue() == ""  # not a second time through Hydra's console
    assert (tmp_path / "train.log").read_text().count("train done") == 1  # and in the job's log file


def test_log_level_from_env(monkeypatch):
    monkeypatch.setenv("KIT_LOG_LEVEL", "warning")
    assert kit_log.setup().level == logging.WARNING
    monkeypatch.setenv("KIT_LOG_LEVEL", "nonsense")
    assert kit_log.setup().level == logging.INFO
    monkeypatch.delenv("KIT_LOG_LEVEL")
    kit_log.setup()


# ---------------------------------------------------------------- noise


def test_known_noise_dropped_by_message_and_logger_only():
    kit_log.quiet_known_noise()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append((record.name, record.getMessage()))
    logging.getLogger("torchao").addHandler(handler)  # sees its children's records too (propagation)
    try:
        logging.getLogger("torchao").warning("Skipping import of cpp extensions due to incompatible torch version x")
        logging.getLogger("torchao").warning("something else from torchao")
        logging.getLogger("torchao.quantization").warning("Skipping import of cpp extensions due to incompatible torch version x")
    finally:
        logging.getLogger("torchao").removeHandler(handler)
    # the exact message from the exact logger is dropped; anything else still shows
    assert seen == [
        ("torchao", "something else from torchao"),
        ("torchao.quantization", "Skipping import of cpp extensions due to incompatible torch version x"),
    ]


def test_known_warnings_ignored_by_message_and_module_only():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with kit_log.quiet_warnings():
            for module in ("inspect_ai.model._retry", "mypackage.retry"):
                warnings.warn_explicit(
                    "The 'initial' parameter is deprecated, use 'multiplier' instead",
                    DeprecationWarning,
                    "x.py",
                    1,
                    module=module,
                )
            warnings.warn_explicit("another deprecation", DeprecationWarning, "x.py", 1, module="inspect_ai.model._retry")
    assert sorted(str(w.message) for w in caught) == [
        "The 'initial' parameter is deprecated, use 'multiplier' instead",
        "another deprecation",
    ]
    # and the filters do not outlive the block (config.py used to set one for the whole process)
    assert warnings.filters == before


def test_importing_the_stack_prints_no_known_noise(kit_cache):
    code = "import kit.train.metric_logger, kit.job.pipeline"  # torchtune, torchao, inspect_ai, peft
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env={**os.environ, "KIT_CACHE": str(kit_cache)}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [n for n in NOISE if n in proc.stdout + proc.stderr], proc.stderr[-2000:]


def test_greedy_eval_passes_no_temperature(tiny_base, tmp_path, capfd):
    from omegaconf import OmegaConf

    from kit.eval.inspect_runner import hf_model, run_inspect

    eval_cfg = OmegaConf.create(
        {"device": "cpu", "dtype": "fp32", "batch_size": 4, "max_tokens": 4, "temperature": 0.0, "seed": 0}
    )
    result = run_inspect(hf_model(tiny_base, "tiny", eval_cfg), ["kit/parity"], tmp_path, eval_cfg, limit=2)
    assert result["logs"]
    out = capfd.readouterr()
    assert "generation flags are not valid" not in out.out + out.err


def tiny_adapters(base: Path, root: Path, n: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
        folders.append(root / f"adapter{i}")
        model.save_pretrained(folders[-1])
    return folders


def test_detaching_the_active_adapter_does_not_warn(tiny_base, tmp_path):
    from kit.lora.resident import ResidentBase

    first, second = tiny_adapters(tiny_base, tmp_path, 2)
    resident = ResidentBase(tiny_base, "cpu", "fp32", max_adapters=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resident.activate(resident.attach(first))
        name = resident.attach(second)  # over max_adapters: the active first one is detached
    assert list(resident.attached) == [name]
    assert not [w for w in caught if "was active which is now deleted" in str(w.message)]


def test_epoch_bars_close_the_previous_bar():
    from tqdm import tqdm

    from kit.train.recipes import EpochBars

    stream = io.StringIO()
    bars = EpochBars(tqdm)
    for _ in range(3):  # as torchtune's recipe does: a new bar per epoch, never closed
        bar = bars(total=2, file=stream)
        bar.update(2)
    bars.close()
    assert "\x1b[A" not in stream.getvalue()


# ---------------------------------------------------------------- result block


def finished_summary(job: Path) -> dict:
    (job / "inspect_logs").mkdir(parents=True)
    (job / "wandb" / "offline-run-1").mkdir(parents=True)
    return {
        "status": "done",
        "job_dir": str(job),
        "scores": {"parity": {"mean": 0.9, "stderr": 0.03}},
        "base_scores": {"parity": {"mean": 0.5, "stderr": 0.05}},
        "eval": {"base_scores_cached": True},
        "verify": {"passed": True, "markdown": "verify.md"},
        "timings": {"train_s": 4.2, "eval_s": 8.0, "base_scores_s": 0.01, "verify_s": 15.0, "total_s": 29.5},
        "checkpoint": {"kind": "adapter", "path": str(job / "adapter"), "bytes": 97192},
        "storage": {"persistent_bytes": 600000},
    }


def test_result_block_names_everything_a_user_looks_for(tmp_path):
    from kit.commands.train import result_lines

    job = tmp_path / "job"
    text = "\n".join(result_lines(finished_summary(job)))
    for needle in (
        f"kit: job done: {job}",
        "parity/mean 0.900 (base 0.500, +0.400)",
        "verify      passed",
        "train 4.2 s",
        "eval 8.0 s",
        "base scores 0.0 s (cached)",
        "verify 15.0 s",
        "total 29.5 s",
        "adapter, 97.19 KB (97192 bytes)",
        f"inspect view --log-dir {job / 'inspect_logs'}",
        f"wandb sync {job / 'wandb'}/offline-run-*",
    ):
        assert needle in text, (needle, text)
    assert "stderr" not in text


def test_result_block_of_a_modifier_job_is_a_modifier_by_task_table(tmp_path):
    from kit.commands.train import result_lines

    job = tmp_path / "job"
    (job / "modifiers").mkdir(parents=True)
    names, tasks = ["parity", "last_digit"], ["parity", "last_digit"]
    summary = {
        **finished_summary(job),  # (a modifier job has no top-level inspect_logs: each modifier has its own)
        "modifiers": {n: {} for n in names},
        "scores": {f"{n}/{t}": {"mean": 0.95 if n == t else 0.0, "stderr": 0.1} for n in names for t in tasks},
        "base_scores": {f"{n}/{t}": {"mean": 0.25, "stderr": 0.1} for n in names for t in tasks},
    }
    (job / "inspect_logs").rmdir()
    lines = result_lines(summary)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  score"))
    header, base, parity, last_digit = (ln.split() for ln in lines[start + 1 : start + 5])
    assert header == tasks
    assert base == ["base", "0.250", "0.250"]
    assert parity == ["parity", "0.950", "0.000"] and last_digit == ["last_digit", "0.000", "0.950"]
    text = "\n".join(lines)
    assert f"inspect view --log-dir {job / 'modifiers'}" in text
    assert f"python -m kit serve serve.registry={job}" in text
    assert "stderr" not in text and "0.100" not in text


def test_result_block_says_a_failed_verify(tmp_path):
    from kit.commands.train import result_lines

    summary = finished_summary(tmp_path / "job")
    summary["verify"] = {"passed": False, "failed": ["logits"], "markdown": "verify.md"}
    assert any("FAILED ['logits']" in ln for ln in result_lines(summary))


def test_verify_overall_line():
    from kit.commands.verify import overall_line

    assert overall_line(4, ["2"], []) == "kit: verify: 3 of 4 jobs passed (failed: ['2'])"
    assert overall_line(1, [], []) == "kit: verify: 1 of 1 job passed"
    assert overall_line(3, [], ["0"]) == "kit: verify: 2 of 3 jobs passed (not verified: ['0'])"


# ---------------------------------------------------------------- config edges


def test_hydra_flags_with_values_are_not_overrides():
    from kit.core.overrides import split_args

    assert split_args(["--cfg", "job", "lora.rank=4"]) == (["lora.rank=4"], False)
    assert split_args(["-c", "all", "--package", "lora", "-m", "lora.rank=4,8"]) == (["lora.rank=4,8"], True)
    assert split_args(["--info", "defaults", "x=1"]) == (["x=1"], False)
    assert split_args(["--info", "x=1"]) == (["x=1"], False)


def test_cfg_job_composes_and_touches_no_dir(tmp_path, kit_cache):
    from kit.sweep.preflight import check_overrides

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "failed"}))  # an unfinished attempt
    assert check_overrides("train", ["--cfg", "job", f"hydra.run.dir={tmp_path / 'run'}"]) is None
    assert not (tmp_path / "run" / "attempts").exists()  # only printing: the attempt stays where it is


@pytest.mark.parametrize("override", ["+lora.rnk=8", "++lora.rnk=8", "+trainer.epoch=2", "+eval.vllm.max_lora=3"])
def test_added_key_the_schema_does_not_know_is_refused(override, kit_cache):
    from kit.sweep.preflight import check_overrides

    key = override.lstrip("+").partition("=")[0]
    with pytest.raises(KitError, match=f"unknown key '{key}'") as e:
        check_overrides("train", [override])
    assert "\n" not in str(e.value)


def test_added_keys_that_are_fine_pass():
    from kit.core.config import compose
    from kit.sweep.preflight import check_added_keys

    for overrides in (["+experiment=rank_sweep"], ["++lora.rank=4"]):
        check_added_keys(compose("train", overrides), overrides)


def fake_sinfo(bin_dir: Path, rc: int) -> None:
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("sbatch", "exit 0"), ("sinfo", f"echo 'sinfo: error: cannot reach slurmctld' >&2; exit {rc}")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("path_kind", ["no_slurm", "no_controller"])
def test_slurm_launcher_without_a_cluster_fails_up_front(path_kind, tmp_path, monkeypatch, kit_cache):
    from kit.sweep.preflight import check_overrides

    bin_dir = tmp_path / "bin"
    if path_kind == "no_controller":
        fake_sinfo(bin_dir, 1)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}")
    sweep = tmp_path / "sweep"
    with pytest.raises(KitError, match="hydra/launcher uses SLURM") as e:
        check_overrides("train", ["-m", "lora.rank=8,16", "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={sweep}"])
    assert ("cannot reach slurmctld" in str(e.value)) == (path_kind == "no_controller")
    assert not sweep.exists()


def test_slurm_launcher_with_an_answering_cluster_passes(tmp_path, monkeypatch, kit_cache):
    from kit.sweep.preflight import check_overrides

    fake_sinfo(tmp_path / "bin", 0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert (
        check_overrides("train", ["-m", "lora.rank=8", "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path / 's'}"])
        is None
    )


# ---------------------------------------------------------------- small wrong things


def test_model_path_that_does_not_exist(tmp_path):
    from omegaconf import OmegaConf

    from kit.core.model.resolve import resolve_base

    with pytest.raises(KitError, match="does not exist"):
        resolve_base(OmegaConf.create({"path": str(tmp_path / "nowhere"), "name": "x"}))
    with pytest.raises(KitError, match="no config.json"):
        resolve_base(OmegaConf.create({"path": str(tmp_path), "name": "x"}))


def test_report_exits_non_zero_when_no_job_is_done(tmp_path, capsys):
    from kit.commands.report import main

    for n in range(2):
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / "summary.json").write_text(
            json.dumps({"status": "failed", "error": "boom", "overrides": [f"lora.rank={8 * (n + 1)}"]})
        )
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kit: error: none of the 2 jobs")


def test_plugins_lists_every_launcher_config():
    from kit.commands.plugins import status
    from kit.core.config import conf_dir
    from kit.sweep.launchers import LAUNCHERS

    listed = {r["name"] for r in status() if r["group"] == "launcher"}
    assert listed == set(LAUNCHERS) | {p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml")}
    assert {"basic", "submitit_local", "submitit_slurm", "local_slurm", "slurm_site_example"} <= listed


def test_merged_job_estimates_the_adapter(tiny_base):
    from kit.core.config import compose
    from kit.train.storage import other_checkpointer

    cfg = compose("train", ["phase.merge=true"])
    assert other_checkpointer(cfg, tiny_base, "fp32")["kind"] == "full"  # what an adapter job keeps
    assert other_checkpointer(cfg, tiny_base, "fp32", "full")["kind"] == "adapter"  # what phase.merge keeps


# ---------------------------------------------------------------- W&B


def logger_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"kind": "wandb", "mode": "offline", "project": "kit-test", "entity": None, "tags": []})


def finished_run(folder: Path) -> dict:
    """run_info of the one offline run in ``folder``, once W&B's service has written it out (its
    writer is another process, which can lag behind ``run.finish()`` on a busy machine)."""
    import time

    deadline = time.time() + 60
    path = next(folder.glob("wandb/offline-run-*/run-*.wandb"))
    while time.time() < deadline and not any(r.WhichOneof("record_type") == "exit" for r in records(path)):
        time.sleep(1)
    return run_info(path)


def test_train_runs_plot_loss_on_one_step_axis(tmp_path):
    from kit.core.wandb_logger import phase_run
    from kit.train.metric_logger import JobMetricLogger

    with phase_run(logger_cfg(), tmp_path, "train", "sweep-x", "job0", {}) as run:
        metrics = JobMetricLogger(str(tmp_path))
        metrics.attach(run)  # as kit.train.training does once torchtune has built the logger
        for step, loss in enumerate([2.0, 1.0, 1.5], 1):
            metrics.log_dict({"loss": loss}, step)
        metrics.close()
    info = finished_run(tmp_path)
    assert info["group"] == "sweep-x"
    assert info["metrics"]["train/*"]["step_metric"] == "train/step"
    assert set(info["metrics"]["train/loss"]["summary"]) >= {"min", "last"}
    assert info["history"]["train/step"] == [1, 2, 3]


def test_sweep_run_charts_score_and_storage_against_the_swept_value(tmp_path):
    from kit.sweep.rows import build
    from kit.sweep.wandb_run import log_to_wandb

    for n, (rank, score) in enumerate([(8, 1.0), (16, 0.5)]):
        job = tmp_path / str(n)
        job.mkdir()
        (job / "summary.json").write_text(
            json.dumps(
                {
                    "status": "done",
                    "overrides": [f"lora.rank={rank}"],
                    "scores": {"parity": {"mean": score}},
                    "base_scores": {"parity": {"mean": 0.0}},
                    "checkpoint": {"kind": "adapter", "bytes": 1000 * rank},
                    "storage": {"persistent_bytes": 5000 * rank},
                    "timings": {"train_s": 1.0, "eval_s": 1.0},
                }
            )
        )
    summary = build(tmp_path)
    log_to_wandb(logger_cfg(), tmp_path, summary)
    info = finished_run(tmp_path)
    assert info["job_type"] == "sweep"
    panels = {k.rpartition("visualize/")[2]: v for k, v in info["config"].items() if "visualize/" in k}
    score = panels["sweep/score_vs_lora.rank/parity/mean"]["panel_config"]["fieldSettings"]
    storage = panels["sweep/storage_vs_lora.rank"]["panel_config"]["fieldSettings"]
    assert (score["x"], score["y"]) == ("lora.rank", "parity/mean")
    assert (storage["x"], storage["y"]) == ("lora.rank", "checkpoint_bytes")
    tables = tmp_path.glob("wandb/offline-run-*/files/media/table/sweep/score_vs_lora.rank/parity/mean_table*.json")
    table = next(tables)
    data = json.loads(table.read_text())
    assert [row[:2] for row in data["data"]] == [[8.0, 1.0], [16.0, 0.5]]


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_default_job_ends_with_a_result_and_no_noise(trained_job):
    out = (trained_job.parent / "stdout.txt").read_text()
    err = (trained_job.parent / "stderr.txt").read_text()
    assert f"kit: job done: {trained_job}" in out
    assert "inspect view --log-dir" in out and "wandb sync" in out
    chosen = json.loads((trained_job / "summary.json").read_text())["eval"]["strategy_chosen"]  # eval=auto measures
    for phase in ("train", f"eval ({chosen})", "base scores", "verify"):
        assert f"kit: {phase} ..." in err and f"kit: {phase} done in" in err, phase
        assert err.count(f"kit: {phase} done in") == 1, phase  # once, not twice under Hydra
    assert not [n for n in NOISE if n in out + err], [n for n in NOISE if n in out + err]
    summary = json.loads((trained_job / "summary.json").read_text())
    assert summary["eval"]["base_logs"] and all(Path(p).exists() for p in summary["eval"]["base_logs"])
    assert {"train_s", "eval_s", "base_scores_s", "verify_s", "total_s"} <= set(summary["timings"])


@pytest.mark.slow
def test_cli_config_edges(kit_cache, tmp_path):
    proc = run_kit(["train", "--cfg", "job", "lora.rank=4"], kit_cache, tmp_path)
    assert proc.returncode == 0 and "rank: 4" in proc.stdout, proc.stderr[-2000:]
    proc = run_kit(["train", "+lora.rnk=8", f"hydra.run.dir={tmp_path / 'job'}"], kit_cache, tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "kit: error: unknown key 'lora.rnk' in '+lora.rnk=8': lora has no key 'rnk'; expected one of "
        "['rank', 'alpha', 'dropout', 'attn_modules', 'apply_to_mlp', 'apply_to_output']"
    ]
    assert not (tmp_path / "job").exists()
