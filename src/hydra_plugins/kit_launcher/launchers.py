"""kit's launchers as Hydra plugins (config group ``hydra/launcher``).

Hydra instantiates launchers only from classes defined under the ``hydra_plugins``
package, so they are named here; what they do is in kit/launcher.py.
"""

from kit.sweep import launchers as launcher


class BasicLauncher(launcher.BasicLauncher):
    pass


class LocalLauncher(launcher.LocalLauncher):
    pass


class SlurmLauncher(launcher.SlurmLauncher):
    pass
