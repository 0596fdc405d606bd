"""kit's launcher configs: each composes into kit's launcher class, and a site profile
turns into the sbatch script a user expects (GPUs follow trainer.nproc_per_node)."""

import shutil

import pytest
from hydra.utils import instantiate

from kit.core.config import conf_dir
from kit.core.config import compose

LAUNCHERS = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))
KIT_CLASSES = {"BasicLauncher", "LocalLauncher", "SlurmLauncher"}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_is_kits_and_composes_without_warnings(launcher, recwarn, tmp_path):
    cfg = compose("train", [f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    instance = instantiate(cfg.hydra.launcher)
    assert type(instance).__module__ == "hydra_plugins.kit_launcher.launchers"
    assert type(instance).__name__ in KIT_CLASSES
    assert not [w for w in recwarn if "ConfigStore schema" in str(w.message)]


def test_default_launcher_is_kits_basic():
    cfg = compose("train", [], hydra_cfg=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.kit_launcher.launchers.BasicLauncher"


def test_unknown_launcher_key_fails_at_compose():
    with pytest.raises(Exception, match="partitoin"):
        compose("train", ["hydra/launcher=submitit_slurm", "hydra.launcher.partitoin=gpu"], hydra_cfg=True)


@pytest.mark.skipif(shutil.which("srun") is None,
                    reason="submitit's SLURM executor needs srun on PATH; run launchers/local_slurm/install.sh")
def test_site_profile_sbatch_script(tmp_path):
    cfg = compose("train", ["hydra/launcher=slurm_site_example", "trainer.nproc_per_node=4", "+experiment=rank_sweep",
                            f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    executor = instantiate(cfg.hydra.launcher).executor()
    script = executor._executor._make_submission_file_text("python -m kit", "uid")
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu", "#SBATCH --account=my-lab",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --time=240",
                 "#SBATCH --job-name=kit-rank_sweep", "module load cuda/12.4"):
        assert line in script.splitlines(), line
