"""kit's configs on Hydra's search path, set up each time Hydra builds its config loader.

- kit's launcher configs into the ConfigStore (kit.sweep.launchers.register_configs) under the names
  ``basic``, ``submitit_local``, ``submitit_slurm``. Hydra's plugin scan (re)runs every plugin module,
  the submitit plugin's config module included, which stores the plugin's own nodes under the same
  names; Hydra calls this plugin after that scan, so kit's nodes are the ones composed, whatever the
  scan's order.
- the user's own kit configs, ``$KIT_CONFIG_DIR`` (default ``~/.config/kit``), appended: site profiles
  (``hydra/launcher/<site>.yaml`` with ``defaults: [submitit_slurm, _self_]``, used as
  ``hydra/launcher=<site>``) and experiments (``experiment/<name>.yaml``) live there, not in the
  installed package; appended, so a user file never silently replaces one kit ships.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from kit.core.folders import user_config_dir


class KitConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from kit.sweep.launchers import register_configs

        register_configs()
        folder = user_config_dir()
        if folder.is_dir():
            search_path.append(provider="kit-user", path=f"file://{folder}")
