"""The git-tracked files that say which lakeFS commits a dataset version is.

`versions/<dataset>.lock.yaml` pins the raw inputs (see datakiln.lakefs.pin);
`versions/<dataset>.ref.yaml` names where the dataset is published. Both are
small YAML files with no timestamps, so they change exactly when what they
describe changes. This module needs no lakeFS client, so a build that never
talks to lakeFS can write them cheaply.

(They live outside `conf/` because `compose` in dvc.yaml depends on all of it.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

VERSIONS_DIR = "versions"
MERGED = "merged"
AWAITING_REVIEW = "awaiting review"
_HEADER = (
    "# Where dataset {dataset} is published. Written by publish@{dataset}; commit\n"
    "# it, so the history of this file is the history of the dataset's versions.\n"
)


@dataclass(frozen=True)
class PublishRef:
    dataset: str
    repository: str
    target_branch: str
    path: str
    build_branch: str
    # The commit holding this version of the dataset.
    commit: str
    # The commit of the target branch that made it visible there; null while
    # the build branch awaits review.
    merge_commit: str | None
    status: str

    @property
    def uri(self) -> str:
        return (
            f"lakefs://{self.repository}/{self.merge_commit or self.commit}/{self.path}"
        )


def ref_path(root: Path, dataset: str) -> Path:
    return root / VERSIONS_DIR / f"{dataset}.ref.yaml"


def lock_path(root: Path, dataset: str) -> Path:
    return root / VERSIONS_DIR / f"{dataset}.lock.yaml"


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically; False (and no write) when the file holds it."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def write_ref(root: Path, ref: PublishRef) -> bool:
    body = asdict(ref) | {"uri": ref.uri}
    text = _HEADER.format(dataset=ref.dataset) + yaml.safe_dump(body, sort_keys=False)
    return write_if_changed(ref_path(root, ref.dataset), text)


def read_ref(root: Path, dataset: str) -> PublishRef | None:
    path = ref_path(root, dataset)
    if not path.exists():
        return None
    data: Any = yaml.safe_load(path.read_text()) or {}
    if data.get("target", "lakefs") != "lakefs" or "repository" not in data:
        return None
    fields = {name: data.get(name) for name in PublishRef.__dataclass_fields__}
    return PublishRef(**fields)


def write_local_ref(root: Path, dataset: str, folder: str) -> bool:
    """The ref file of a dataset published only to a local folder: dvc.yaml
    declares a ref file for every dataset."""
    body = {"dataset": dataset, "target": "local", "folder": folder}
    text = _HEADER.format(dataset=dataset) + yaml.safe_dump(body, sort_keys=False)
    return write_if_changed(ref_path(root, dataset), text)
