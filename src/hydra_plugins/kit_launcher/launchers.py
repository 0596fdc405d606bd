"""kit's launchers as Hydra plugins (config group ``hydra/launcher``).

Hydra instantiates launcher classes from the ``hydra_plugins`` namespace, so they are named here;
what they do is in kit.sweep.launchers. Their configs are stored by kit's search-path plugin
(``searchpath.py``), which Hydra calls after its plugin scan.
"""

from kit.sweep.launchers import basic, local, slurm


class BasicLauncher(basic.BasicLauncher):
    pass


class LocalLauncher(local.LocalLauncher):
    pass


class SlurmLauncher(slurm.SlurmLauncher):
    pass
