"""Every check of a dataset's declaration that needs no data.

The dataclasses of datakiln.config check keys and types; these check values
(patterns that must compile, shares that must add up, names that must refer
to a label task). Each stage runs its own check before it reads a record;
`datakiln compose` runs them all, so that a bad value stops the build at the
compose stage, before any stage has run, instead of after the stages before
the one it concerns.
"""

from __future__ import annotations

from datakiln.config import DatasetConf


def check_dataset(conf: DatasetConf, dataset: str) -> None:
    """Raise the ConfigError of the first bad value, naming its dotted key."""
    from datakiln import clean, dedup, ingest, publish, split
    from datakiln.label.tasks import compile_tasks

    ingest.check_declaration(conf, dataset)
    clean.check_conf(conf.clean, dataset)
    dedup.check_conf(conf.dedup, dataset)
    compile_tasks(conf.label, dataset)
    split.check_conf(conf, dataset)
    publish.check_conf(conf, dataset)
