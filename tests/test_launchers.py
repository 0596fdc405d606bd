"""kit's launcher configs: each composes into kit's launcher class, and a site profile
turns into the sbatch script a user expects (GPUs follow trainer.nproc_per_node)."""

import shutil

import pytest
from hydra.utils import instantiate

from kit.core.config import compose, conf_dir

LAUNCHERS = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))
KIT_CLASSES = {"BasicLauncher", "LocalLauncher", "SlurmLauncher"}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_is_kits_and_composes_without_warnings(launcher, recwarn, tmp_path):
    cfg = compose("train", [f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    instance = instantiate(cfg.hydra.launcher)
    assert type(instance).__module__ == "hydra_plugins.kit_launcher.launchers"
    assert type(instance).__name__ in KIT_CLASSES
    # composing a launcher says nothing (a ResourceWarning is garbage collection of another test's file)
    assert [str(w.message) for w in recwarn if not issubclass(w.category, ResourceWarning)] == []


def test_kit_silences_exactly_hydras_launcher_schema_warning():
    """Hydra warns on every compose that kit's launcher yamls extend its launcher schemas of the same
    name (deprecated, but merged as intended); kit drops that one message and nothing else."""
    import warnings

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from kit.core.config import register_resolvers
    from kit.core.log import quiet_warnings

    register_resolvers()

    def compose_raw():
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            hydra_compose("train", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True)

    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        compose_raw()
    assert any("ConfigStore schema" in str(w.message) for w in raw)  # Hydra does warn
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        with quiet_warnings():
            compose_raw()
            warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in quiet] == ["an unrelated warning"]


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
