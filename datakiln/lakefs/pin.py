"""Raw inputs pinned to lakeFS commits: the lock file of a dataset.

A source may be `lakefs://<repo>/<ref>/<path or glob>`, where the ref is a
branch or tag that moves. `versions/<dataset>.lock.yaml` records, for each such
source, the commit id the ref stood for when it was pinned. The file is
tracked by git and is a dependency of `ingest@<dataset>`, and ingest reads
exactly those commits, never the moving ref. So:

- `datakiln lakefs pin` moves the pins to what the refs stand for now; if a ref
  moved, the lock changes and the next `dvc repro` reruns ingest, and only then;
- `pin@<dataset>` in dvc.yaml pins sources that are new or whose address
  changed, and keeps every other pin, so a build never moves a pin by itself;
- checking out an older git commit brings back its lock file, and a rebuild
  reads exactly the same raw bytes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from datakiln.config import DatasetConf, SourceConf
from datakiln.errors import ConfigError, SourceError
from datakiln.lakefs.uri import LakeFSURI, is_lakefs
from datakiln.lakefs.versions import lock_path, write_if_changed
from datakiln.stage import StageContext

if TYPE_CHECKING:
    from datakiln.lakefs.client import LakeFS
    from datakiln.lakefs.credentials import CredentialsProvider

logger = logging.getLogger(__name__)

COMMIT_ID = re.compile(r"^[0-9a-f]{64}$")
_HEADER = (
    "# Raw inputs of dataset {dataset}, pinned to lakeFS commits. Written by\n"
    "# `datakiln lakefs pin`; ingest reads exactly these commits. Commit this file.\n"
)


@dataclass(frozen=True)
class Pin:
    # The address as declared, with its moving ref.
    uri: str
    commit: str

    @property
    def pinned_uri(self) -> LakeFSURI:
        return LakeFSURI.parse(self.uri).at(self.commit)


def lakefs_sources(conf: DatasetConf, dataset: str) -> dict[str, LakeFSURI]:
    """Source name -> parsed address, for the sources that live in lakeFS."""
    found = {}
    for i, source in enumerate(conf.sources):
        if is_lakefs(source.path):
            key = f"dataset.{dataset}.sources[{i}].path"
            where = f"conf/dataset/{dataset}.yaml: key '{key}'"
            found[source.name] = LakeFSURI.parse(source.path, where)
    return found


def read_lock(root: Path, dataset: str) -> dict[str, Pin]:
    path = lock_path(root, dataset)
    if not path.exists():
        return {}
    data: Any = yaml.safe_load(path.read_text()) or {}
    sources = data.get("sources") or {}
    try:
        return {
            str(name): Pin(str(entry["uri"]), str(entry["commit"]))
            for name, entry in sources.items()
        }
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(
            f"{path}: each entry under 'sources' needs 'uri' and 'commit'. Delete "
            f"the file and run `datakiln lakefs pin {dataset}` to write it again."
        ) from None


def write_lock(root: Path, dataset: str, pins: dict[str, Pin]) -> bool:
    """Write the lock file; False (and no write) when it would not change."""
    path = lock_path(root, dataset)
    body = {
        "dataset": dataset,
        "sources": {
            name: {"uri": pin.uri, "commit": pin.commit}
            for name, pin in sorted(pins.items())
        },
    }
    text = _HEADER.format(dataset=dataset) + yaml.safe_dump(body, sort_keys=False)
    return write_if_changed(path, text)


def pin_dataset(
    root: Path,
    dataset: str,
    conf: DatasetConf,
    keep: bool = False,
    provider: CredentialsProvider | None = None,
    lake: LakeFS | None = None,
) -> tuple[dict[str, Pin], bool]:
    """Resolve the dataset's lakeFS sources to commits and write its lock.

    With `keep`, a source already pinned at the same address keeps its pin and
    no server is contacted for it. Returns the pins and whether the file changed.
    """
    wanted = lakefs_sources(conf, dataset)
    current = read_lock(root, dataset)
    pins: dict[str, Pin] = {}
    for name, uri in wanted.items():
        held = current.get(name)
        if keep and held is not None and held.uri == str(uri):
            pins[name] = held
            continue
        if COMMIT_ID.match(uri.ref):
            pins[name] = Pin(str(uri), uri.ref)
            continue
        if lake is None:
            # The client takes most of a second to import: only when a ref
            # must be resolved.
            from datakiln.lakefs.client import connect

            lake = connect(provider)
        pins[name] = Pin(str(uri), lake.resolve(uri.repo, uri.ref))
        if held is None or held.commit != pins[name].commit:
            logger.info("%s: %s -> %s", dataset, uri, pins[name].commit)
    changed = write_lock(root, dataset, pins)
    return pins, changed


def pinned_conf(conf: DatasetConf, root: Path, dataset: str) -> DatasetConf:
    """The declaration with each lakeFS source's ref replaced by its pinned commit.

    Refuses to go on when a lakeFS source has no pin, or a pin for another
    address: reading the moving ref instead would make the build unrepeatable.
    """
    wanted = lakefs_sources(conf, dataset)
    if not wanted:
        return conf
    pins = read_lock(root, dataset)
    sources: list[SourceConf] = []
    for source in conf.sources:
        uri = wanted.get(source.name)
        if uri is None:
            sources.append(source)
            continue
        pin = pins.get(source.name)
        if pin is None or pin.uri != str(uri):
            found = f"a pin for {pin.uri}" if pin else "no pin"
            raise SourceError(
                f"{lock_path(root, dataset)}: source '{source.name}' is declared as "
                f"{uri} but the lock file has {found}. Run `datakiln lakefs pin "
                f"{dataset}` (or `dvc repro`, whose pin@{dataset} does it), then "
                f"commit the lock file."
            )
        sources.append(replace(source, path=str(pin.pinned_uri)))
    return replace(conf, sources=sources)


def run(ctx: StageContext) -> None:
    """DVC stage `pin@<dataset>`: pin new or changed addresses, keep the rest."""
    pins, changed = pin_dataset(ctx.root, ctx.dataset, ctx.conf, keep=True)
    logger.info(
        "pin@%s: %d lakeFS sources pinned%s",
        ctx.dataset,
        len(pins),
        "" if changed else " (unchanged)",
    )
