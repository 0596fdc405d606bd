"""kit's launcher configs: each composes into kit's launcher class, and a site profile
turns into the sbatch script a user expects (GPUs follow trainer.nproc_per_node)."""

import shutil

import pytest
from hydra.utils import instantiate

from kit.core.config import compose, conf_dir
from kit.sweep.launchers import LAUNCHERS as REGISTRY

PROFILES = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))  # shipped profiles
LAUNCHERS = sorted(REGISTRY) + PROFILES
KIT_CLASSES = {"BasicLauncher", "LocalLauncher", "SlurmLauncher"}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_is_kits_and_composes_without_warnings(launcher, recwarn, tmp_path):
    cfg = compose("train", [f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    instance = instantiate(cfg.hydra.launcher)
    assert type(instance).__module__ == "hydra_plugins.kit_launcher.launchers"
    assert type(instance).__name__ in KIT_CLASSES
    # composing a launcher says nothing (a ResourceWarning is garbage collection of another test's file)
    assert [str(w.message) for w in recwarn if not issubclass(w.category, ResourceWarning)] == []


def test_launchers_compose_the_hydra_way_without_any_warning(tmp_path):
    """kit's launchers are ConfigStore dataclasses extending the submitit plugin's (no yaml of the same
    name, so no deprecated schema matching) and nothing is silenced: raw Hydra, every warning on."""
    import warnings

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from kit.core.config import register_resolvers

    register_resolvers()
    # by name: Hydra's plugin scan re-runs the plugin's config module, so its classes are made anew
    assert "SlurmQueueConf" in [c.__name__ for c in REGISTRY["submitit_slurm"].conf.__mro__]
    assert "LocalQueueConf" in [c.__name__ for c in REGISTRY["submitit_local"].conf.__mro__]
    assert not {f"{name}.yaml" for name in REGISTRY} & {p.name for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml")}
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        for launcher in LAUNCHERS:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = hydra_compose(
                    "train", overrides=[f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True
                )
            assert cfg.hydra.launcher._target_.startswith("hydra_plugins.kit_launcher.launchers."), launcher
    assert [str(w.message) for w in raw if not issubclass(w.category, ResourceWarning)] == []


def test_a_site_profile_in_the_users_config_folder_is_found(tmp_path, monkeypatch):
    """Site profiles live in $KIT_CONFIG_DIR (on Hydra's search path), not in the installed package."""
    profile = tmp_path / "conf" / "hydra" / "launcher" / "mysite.yaml"
    profile.parent.mkdir(parents=True)
    profile.write_text("defaults:\n  - submitit_slurm\n  - _self_\npartition: a100\naccount: lab42\n")
    monkeypatch.setenv("KIT_CONFIG_DIR", str(tmp_path / "conf"))
    cfg = compose("train", ["hydra/launcher=mysite", f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.kit_launcher.launchers.SlurmLauncher"
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account, cfg.hydra.launcher.timeout_min) == ("a100", "lab42", 240)


def test_default_launcher_is_kits_basic():
    cfg = compose("train", [], hydra_cfg=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.kit_launcher.launchers.BasicLauncher"


def test_unknown_launcher_key_fails_at_compose():
    with pytest.raises(Exception, match="partitoin"):
        compose("train", ["hydra/launcher=submitit_slurm", "hydra.launcher.partitoin=gpu"], hydra_cfg=True)


@pytest.mark.skipif(
    shutil.which("srun") is None, reason="submitit's SLURM executor needs srun on PATH; run launchers/local_slurm/install.sh"
)
def test_site_profile_sbatch_script(tmp_path):
    cfg = compose(
        "train",
        [
            "hydra/launcher=slurm_site_example",
            "trainer.nproc_per_node=4",
            "+experiment=rank_sweep",
            f"hydra.sweep.dir={tmp_path}",
        ],
        hydra_cfg=True,
    )
    executor = instantiate(cfg.hydra.launcher).executor()
    script = executor._executor._make_submission_file_text("python -m kit", "uid")
    for line in (
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=my-lab",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=240",
        "#SBATCH --job-name=kit-rank_sweep",
        "module load cuda/12.4",
    ):
        assert line in script.splitlines(), line
