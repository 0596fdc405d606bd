"""Every config group option and experiment composes; bad values fail at compose time."""

from pathlib import Path

import pytest

from kit.core.config import conf_dir
from kit.core.errors import KitError
from kit.stages.preflight import check_overrides, expand
from kit.core.config import compose

GROUPS = ["model", "checkpointer", "eval", "phase", "serve", "router", "dataset", "tasks", "logger", "trainer", "lora"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose("train", [f"{group}={option}"])
    assert cfg[group] is not None
    if group == "model":
        assert cfg.model.name == option


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose("train", [f"+experiment={experiment}"], hydra_cfg=True)
    assert cfg.name == experiment


def test_rank_sweep_expands_to_four_ranks_with_alpha_twice_rank():
    cfg = compose("train", ["+experiment=rank_sweep"], hydra_cfg=True)
    points = expand(["+experiment=rank_sweep"], dict(cfg.hydra.sweeper.params))
    ranks = [int(p[-1].split("=")[1]) for p in points]
    assert ranks == [8, 16, 32, 64]
    point = compose("train", points[1])
    assert point.lora.rank == 16 and point.lora.alpha == 32


def test_real_model_presets_name_their_hf_ids():
    ids = {o: compose("train", [f"model={o}"]).model.hf_id for o in options("model") if o != "tiny"}
    assert ids["llama3_1_8b_instruct"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert ids["qwen2_5_0_5b"] == "Qwen/Qwen2.5-0.5B"
    assert all(ids.values())


def test_security_defaults():
    cfg = compose("train", [])
    assert cfg.model.trust_remote_code is False and cfg.model.allow_pickle is False
    assert cfg.model.allow_network is False and cfg.logger.mode.value == "offline"


@pytest.mark.parametrize(
    "override,needle",
    [
        (["lora.rank=abc"], "lora.rank"),
        (["eval=nosuch"], "nosuch"),
        (["trainer.epochs=1.5"], "trainer.epochs"),
        (["checkpointer.kind=zip"], "checkpointer.kind"),
        (["lora.nosuchkey=1"], "nosuchkey"),
    ],
)
def test_bad_overrides_fail_in_one_line_naming_the_key(override, needle):
    with pytest.raises(KitError) as e:
        check_overrides("train", override)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_bad_sweep_point_is_caught_before_any_job():
    with pytest.raises(KitError, match="lora.rank"):
        check_overrides("train", ["-m", "lora.rank=8,oops"])
