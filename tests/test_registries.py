"""Every closed set is one registry, and the schema's enum, the config group and the registry agree.

A new eval strategy, phase, verify check or launcher is found by its package's registry; these tests
fail when an enum value has no entry (or an entry no enum value), when a config option names a phase
that does not exist, or when an entry is missing what the commands read from it.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from kit.core import schema
from kit.core.config import compose, conf_dir
from kit.eval.strategies import STRATEGIES, get_strategy
from kit.eval.strategy import Strategy
from kit.job.phase import Phase
from kit.job.phases import PHASES
from kit.sweep.launchers import LAUNCHERS, entry_for
from kit.verify import CHECKS


def options(group: str) -> set[str]:
    return {p.stem for p in (conf_dir() / group).glob("*.yaml")}


def test_eval_strategies_registry_equals_enum_and_group():
    assert set(STRATEGIES) == {s.value for s in schema.Strategy} == options("eval")
    for name, entry in STRATEGIES.items():
        assert isinstance(entry, Strategy) and entry.name == name and entry.what
        assert entry.evaluate.__module__ == f"kit.eval.strategies.{name}"


def test_resident_strategies_are_the_ones_that_keep_a_base():
    assert {n for n, s in STRATEGIES.items() if s.resident} == {"direct", "merge_in_memory"}


def test_verify_checks_registry_equals_enum():
    assert set(CHECKS) == {c.value for c in schema.Check}
    assert {n for n, c in CHECKS.items() if c.needs_inspect} == {"inspect"}


def test_phase_options_list_registered_phases_and_equal_the_enum():
    assert options("phase") == {p.value for p in schema.Phase}
    for option in sorted(options("phase")):
        listed = OmegaConf.load(conf_dir() / "phase" / f"{option}.yaml").pipeline
        assert set(listed) <= set(PHASES), (option, listed)
    for name, phase in PHASES.items():
        assert isinstance(phase, Phase) and phase.name == name and phase.what
        assert type(phase).__module__ == f"kit.job.phases.{name}"


def test_every_registered_phase_is_in_some_pipeline():
    used = {n for option in options("phase") for n in OmegaConf.load(conf_dir() / "phase" / f"{option}.yaml").pipeline}
    assert set(PHASES) <= used


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_every_launcher_entry_composes_to_its_class(name, tmp_path):
    cfg = compose("train", [f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    assert entry_for(cfg.hydra.launcher) is LAUNCHERS[name]
    assert cfg.hydra.launcher._target_ == f"hydra_plugins.kit_launcher.launchers.{LAUNCHERS[name].target.rpartition('.')[2]}"


def test_unknown_strategy_and_phase_fail_in_one_line():
    from kit.core.errors import KitError
    from kit.job.phases import pipeline

    with pytest.raises(KitError, match="eval strategy 'fast' unknown; expected one of"):
        get_strategy("fast")
    cfg = compose("train", ["phase.pipeline=[train,trian]"])
    with pytest.raises(KitError, match=r"phase.pipeline names unknown phase\(s\) \['trian'\]"):
        pipeline(cfg)


def test_a_failed_verify_stops_the_phases_that_would_build_on_it(tmp_path, monkeypatch):
    """phase=lifecycle compresses and trains on the model verify just checked: with verify.required a
    failed verify ends the job unverified and no later phase runs (its name is in the summary's error)."""
    from kit.core.identity import RunIdentity
    from kit.core.jobdir import JobDir
    from kit.core.summary import Status
    from kit.job import pipeline

    ran = []

    class Fails(Phase):
        name = "verify"

        def run(self, ctx):
            ran.append(self.name)
            ctx.notes["status"] = Status.UNVERIFIED
            ctx.summary.error = "verify failed ['logits']"

    class After(Phase):
        name = "compress"

        def run(self, ctx):
            ran.append(self.name)

    monkeypatch.setattr(pipeline, "pipeline", lambda cfg: [Fails(), After()])
    cfg = compose("train", ["logger=none"])
    summary = pipeline.run_phases(cfg, JobDir(tmp_path), tmp_path, RunIdentity("g", "n", "id"), [])
    assert ran == ["verify"] and summary.status == Status.UNVERIFIED
    assert summary.error == "verify failed ['logits']; not run: ['compress']"
    assert JobDir(tmp_path).read().status == Status.UNVERIFIED
