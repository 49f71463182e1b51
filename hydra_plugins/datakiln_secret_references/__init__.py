"""Hydra plugin: lets DVC's own Hydra composition keep `${secret:...}` as text.

`dvc exp run` and `dvc repro` (with hydra enabled in .dvc/config) compose conf/
into params.yaml in DVC's process and resolve every interpolation there. DVC
loads the plugins in this folder first; this one registers the `secret`
resolver, which returns the reference unchanged, so params.yaml keeps the
name of a secret and never its value (see datakiln/secrets/refs.py), and the
dataset schema that conf/config.yaml lists before each declaration (see
datakiln/config.py), so DVC's params.yaml has every default filled in.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class DatakilnSecretReferences(SearchPathPlugin):
    """Registers the resolver when Hydra builds its search path, before composing."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from datakiln.config import register_hydra

        register_hydra()
