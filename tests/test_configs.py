"""Every config group option and experiment composes; bad values fail at compose time."""

import pytest

from kit.core.config import compose, conf_dir
from kit.core.errors import KitError
from kit.core.overrides import expand
from kit.sweep.preflight import check_overrides

GROUPS = ["model", "checkpointer", "eval", "phase", "serve", "router", "dataset", "tasks", "logger", "trainer", "lora", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose("train", [f"{group}={option}"])
    if group != "debug":  # a _global_ overlay, not a node of its own
        assert cfg[group] is not None
    if group == "model":
        assert cfg.model.name == option
    if group == "debug":  # the short run the slow tests and users share
        assert cfg.trainer.epochs == 1 and cfg.tasks.limit and not cfg.verify.after_train
        assert cfg.logger.kind == "none"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose("train", [f"+experiment={experiment}"], hydra_cfg=True)
    assert cfg.name == experiment


def test_rank_sweep_expands_to_four_ranks_with_one_alpha():
    cfg = compose("train", ["+experiment=rank_sweep"], hydra_cfg=True)
    points = expand(["+experiment=rank_sweep"], dict(cfg.hydra.sweeper.params))
    ranks = [int(p[-1].split("=")[1]) for p in points]
    assert ranks == [8, 16, 32, 64]
    point = compose("train", points[1])
    # alpha fixed (conf/lora/default.yaml says why): the step size must not grow with the rank
    assert point.lora.rank == 16 and point.lora.alpha == 16 == compose("train", points[3]).lora.alpha


def test_real_model_presets_name_their_hf_ids():
    models = {o: compose("train", [f"model={o}"]).model for o in options("model") if o != "tiny"}
    ids = {o: m.hf_id for o, m in models.items()}
    assert ids["llama3_1_8b_instruct"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert ids["qwen2_5_0_5b"] == "Qwen/Qwen2.5-0.5B"
    assert models["smollm2_135m_instruct"].gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"  # from its package
    assert all(m.hf_id or m.gguf_file for m in models.values())


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
        (["eval.strategy=fastest"], "eval.strategy"),
        (["trainer.dtype=fp8"], "trainer.dtype"),
        (["model.loader=vision"], "model.loader"),
        (["phase.name=serving"], "phase.name"),
        (["verify.checks=[logits,vibes]"], "verify.checks"),
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


def schema_defaults(node) -> dict:
    """{dotted key: default} of a schema dataclass, recursing into nested dataclasses."""
    import dataclasses

    from omegaconf import MISSING

    out = {}
    for f in dataclasses.fields(node):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = MISSING
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in schema_defaults(value).items()})
        else:
            out[f.name] = value
    return out


def yaml_keys(data, prefix="") -> set[str]:
    keys = set()
    for k, v in data.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= yaml_keys(v, f"{prefix}{k}.")
    return keys


@pytest.mark.parametrize(
    "group", sorted(p.name for p in conf_dir().iterdir() if p.is_dir() and p.name not in ("experiment", "hydra", "debug"))
)
def test_every_default_has_one_source(group):
    """A key a group's yaml sets has no default in the schema (MISSING), so yaml and schema can never
    disagree; the schema's defaults are for the keys no option of the group sets."""
    import yaml
    from omegaconf import MISSING

    from kit.core.schema import KitConfig

    defaults = schema_defaults(KitConfig)
    both = set()
    for option in (conf_dir() / group).glob("*.yaml"):
        data = yaml.safe_load(option.read_text()) or {}
        for key in yaml_keys(data):
            full = f"{group}.{key}"
            if (
                full in defaults
                and defaults[full] is not MISSING
                and not isinstance(defaults[full], (dict, list))
                or full in defaults
                and isinstance(defaults[full], (dict, list))
                and defaults[full]
            ):
                both.add(f"{full} (schema {defaults[full]!r}, {option.name} {key})")
    assert not both, sorted(both)


def test_a_modifier_trains_with_its_own_epochs_and_lr_else_the_jobs():
    from kit.job.phases.modifiers import modifier_config

    cfg = compose("train", ["+experiment=modifiers", "phase.modifiers.reverse.lr=1e-3"])
    own = {name: modifier_config(cfg, name, cfg.phase.modifiers[name]) for name in ("parity", "last_digit", "reverse")}
    assert own["parity"].trainer.epochs == cfg.trainer.epochs == 8  # no epochs of its own: the job's
    assert own["last_digit"].trainer.epochs == 20 and own["reverse"].trainer.epochs == 30
    assert own["parity"].trainer.lr == own["last_digit"].trainer.lr == cfg.trainer.lr == 3e-3
    assert own["reverse"].trainer.lr == 1e-3
    assert cfg.trainer.epochs == 8 and cfg.trainer.lr == 3e-3  # the job's own config is untouched


@pytest.mark.parametrize(
    "override,needle",
    [
        ("phase.modifiers.reverse.epochs=0", "phase.modifiers.reverse.epochs=0"),
        ("phase.modifiers.last_digit.lr=0", "phase.modifiers.last_digit.lr=0.0"),
        ("phase.modifiers.parity.rank=0", "phase.modifiers.parity.rank=0"),
    ],
)
def test_a_modifier_budget_out_of_range_fails_in_one_line(override, needle):
    from kit.job.preflight import check_ranges

    cfg = compose("train", ["+experiment=modifiers", override])
    with pytest.raises(KitError) as e:
        check_ranges(cfg)
    assert needle in str(e.value) and "out of range" in str(e.value) and "\n" not in str(e.value)
