"""`datakiln lakefs import`: move a local raw folder into a lakeFS branch.

Only files whose content changed are uploaded, and the upload is committed
with a message and metadata (source folder, file counts, datakiln version).
Importing the same folder again uploads nothing and commits nothing.

Uncommitted changes already on the branch are refused when they lie outside
the target path: committing them along with the import would publish
somebody else's half-done work. Changes inside the path are what a crashed
import left, and the new import completes them.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datakiln
from datakiln.errors import LakeFSError
from datakiln.lakefs.client import LakeFS, object_metadata
from datakiln.lakefs.sync import SyncResult, UploadHook, sync_folder
from datakiln.lakefs.uri import LakeFSURI

logger = logging.getLogger(__name__)


@dataclass
class ImportResult:
    uri: LakeFSURI
    commit: str
    committed: bool
    sync: SyncResult = field(default_factory=SyncResult)


def import_folder(
    lake: LakeFS,
    folder: Path,
    target: LakeFSURI,
    message: str | None = None,
    mirror: bool = False,
    on_upload: UploadHook | None = None,
) -> ImportResult:
    """Upload `folder` under `target` (a branch and path) and commit it."""
    if target.is_glob:
        raise LakeFSError(
            f"{target}: an import target is a branch and a folder path, not a glob."
        )
    prefix = _folder_prefix(target.path)
    repo = lake.require_repository(target.repo)
    _ensure_branch(lake, target)
    _refuse_protected(lake, target)
    _refuse_foreign_changes(lake, target, prefix)

    result = sync_folder(
        lake, target.repo, target.ref, folder, prefix, mirror, on_upload
    )
    if not lake.uncommitted(target.repo, target.ref):
        head = lake.resolve(target.repo, target.ref)
        logger.info("%s already holds %s; nothing to commit", target, folder)
        return ImportResult(target, head, False, result)

    files = len(result.uploaded) + len(result.unchanged)
    metadata = object_metadata(
        {
            "datakiln_version": datakiln.__version__,
            "source_folder": str(folder.resolve()),
            "files": files,
            "uploaded": len(result.uploaded),
            "deleted": len(result.deleted),
        }
    )
    text = message or f"Import {files} files from {folder.name}/ into {prefix or '/'}"
    branch = repo.branch(target.ref)
    commit = lake.call(
        f"committing the import to {target.repo}/{target.ref}",
        lambda: branch.commit(text, metadata=metadata),
    )
    logger.info("%s: committed %s", target, commit.id)
    return ImportResult(target, str(commit.id), True, result)


def _folder_prefix(path: str) -> str:
    return path if path == "" or path.endswith("/") else path + "/"


def _ensure_branch(lake: LakeFS, target: LakeFSURI) -> None:
    if lake.branch_head(target.repo, target.ref) is not None:
        return
    info = lake.call(
        f"reading repository {target.repo}",
        lambda: lake.client.sdk_client.repositories_api.get_repository(target.repo),
    )
    source = str(info.default_branch)
    lake.create_branch(target.repo, target.ref, source)
    logger.info("created branch %s of %s from %s", target.ref, target.repo, source)


def _refuse_protected(lake: LakeFS, target: LakeFSURI) -> None:
    for pattern in lake.protected_patterns(target.repo):
        if fnmatch.fnmatchcase(target.ref, pattern):
            raise LakeFSError(
                f"{target}: branch '{target.ref}' is protected (rule '{pattern}'); "
                f"changes reach it only by merge. Import into another branch, for "
                f"example lakefs://{target.repo}/raw/{target.path}, and merge it."
            )


def _refuse_foreign_changes(lake: LakeFS, target: LakeFSURI, prefix: str) -> None:
    foreign = [
        path
        for path in lake.uncommitted(target.repo, target.ref)
        if not path.startswith(prefix)
    ]
    if not foreign:
        return
    shown = "\n  ".join(foreign[:20])
    more = f"\n  ... and {len(foreign) - 20} more" if len(foreign) > 20 else ""
    raise LakeFSError(
        f"lakefs://{target.repo}/{target.ref} has uncommitted changes outside "
        f"{prefix or '/'}, which an import would commit along with it:\n  "
        f"{shown}{more}\nCommit or reset them first (lakectl commit / lakectl "
        f"branch reset lakefs://{target.repo}/{target.ref}), then import again."
    )
