"""Make a lakeFS branch hold what a local folder holds, uploading only changes.

A file is uploaded when no object is at its path, or when the object's content
differs. Content is compared by SHA-256, which each upload stores as object
metadata; objects uploaded by other tools are compared by their checksum,
which on a local or single-part upload is the content's MD5.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lakefs
from lakefs.models import ObjectInfo

from datakiln.errors import LakeFSError
from datakiln.lakefs.client import LakeFS

logger = logging.getLogger(__name__)

SHA256_KEY = "datakiln-sha256"
_CHUNK = 1 << 20

# Called with (relative path, number, total) before each upload: progress
# reporting, and in tests a way to fail the server halfway through.
UploadHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class LocalFile:
    relpath: str
    path: Path
    size: int
    sha256: str
    md5: str


@dataclass
class SyncResult:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.deleted)


def scan_folder(folder: Path, only: set[str] | None = None) -> dict[str, LocalFile]:
    """Every file under `folder` (or those of `only`) by POSIX relative path,
    with its hashes."""
    if not folder.is_dir():
        raise LakeFSError(f"{folder}: not a folder; nothing to upload.")
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or _hidden(path.relative_to(folder)):
            continue
        relpath = path.relative_to(folder).as_posix()
        if only is not None and relpath not in only:
            continue
        sha256, md5 = _hashes(path)
        files[relpath] = LocalFile(relpath, path, path.stat().st_size, sha256, md5)
    return files


def sync_folder(
    lake: LakeFS,
    repo: str,
    branch: str,
    folder: Path,
    prefix: str,
    mirror: bool,
    on_upload: UploadHook | None = None,
    only: set[str] | None = None,
) -> SyncResult:
    """Upload changed files of `folder` to `<branch>/<prefix>`, uncommitted.

    With `mirror`, objects under the prefix that the folder lacks are deleted.
    With `only`, files of the folder not named there are left out.
    """
    local = scan_folder(folder, only)
    remote = remote_state(lake, repo, branch, prefix)
    result = SyncResult()
    todo = []
    for relpath, file in local.items():
        key = prefix + relpath
        if key in remote and remote[key] in (file.sha256, file.md5):
            result.unchanged.append(key)
        else:
            todo.append(file)
    for number, file in enumerate(todo, start=1):
        key = prefix + file.relpath
        if on_upload is not None:
            on_upload(file.relpath, number, len(todo))
        _upload(lake, repo, branch, key, file)
        result.uploaded.append(key)
    if mirror:
        wanted = {prefix + relpath for relpath in local}
        stale = sorted(key for key in remote if key not in wanted)
        if stale:
            _delete(lake, repo, branch, stale)
            result.deleted.extend(stale)
    logger.info(
        "lakefs://%s/%s/%s: %d uploaded, %d deleted, %d unchanged",
        repo,
        branch,
        prefix,
        len(result.uploaded),
        len(result.deleted),
        len(result.unchanged),
    )
    return result


def remote_state(lake: LakeFS, repo: str, branch: str, prefix: str) -> dict[str, str]:
    """Object path -> content hash (SHA-256 where we stored one, else checksum)."""

    def listing() -> dict[str, str]:
        ref = lakefs.Reference(repo, branch, client=lake.client)
        state = {}
        for info in ref.objects(prefix=prefix, user_metadata=True):
            if not isinstance(info, ObjectInfo):
                continue
            metadata = info.metadata or {}
            state[info.path] = metadata.get(SHA256_KEY) or str(info.checksum)
        return state

    return lake.call(f"listing lakefs://{repo}/{branch}/{prefix}", listing)


def _upload(lake: LakeFS, repo: str, branch: str, key: str, file: LocalFile) -> None:
    obj = lakefs.WriteableObject(repo, branch, key, client=lake.client)

    def upload() -> None:
        with (
            file.path.open("rb") as source,
            obj.writer(
                mode="wb", pre_sign=False, metadata={SHA256_KEY: file.sha256}
            ) as target,
        ):
            while chunk := source.read(_CHUNK):
                target.write(chunk)

    lake.call(f"uploading {file.path} to lakefs://{repo}/{branch}/{key}", upload)
    logger.debug("uploaded %s (%d bytes)", key, file.size)


def _delete(lake: LakeFS, repo: str, branch: str, keys: list[str]) -> None:
    branch_obj = lakefs.Branch(repo, branch, client=lake.client)
    # The server takes at most 1,000 paths per request.
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]

        def delete(batch: list[str] = batch) -> None:
            branch_obj.delete_objects(batch)

        lake.call(
            f"deleting {len(batch)} objects from lakefs://{repo}/{branch}", delete
        )


def _hashes(path: Path) -> tuple[str, str]:
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _hidden(relpath: Path) -> bool:
    # Editor swap files, .DS_Store, a stray .git: never raw data.
    return any(part.startswith(".") for part in relpath.parts)
