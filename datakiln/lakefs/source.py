"""Reading a source's files from lakeFS, at a pinned commit only.

Ingest hands over a source whose path is `lakefs://<repo>/<commit>/<path>`
(the pin put the commit there); each matching object is downloaded to a
temporary file, which is what the archive readers need (zip seeks), and then
expanded exactly like a local file.
"""

from __future__ import annotations

import fnmatch
import logging
import tempfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, cast

from datakiln.config import SourceConf
from datakiln.errors import SourceError
from datakiln.lakefs.client import LakeFS, connect
from datakiln.lakefs.credentials import CredentialsProvider
from datakiln.lakefs.pin import COMMIT_ID
from datakiln.lakefs.uri import LakeFSURI
from datakiln.readers.files import SourceFile, expand, is_archive

logger = logging.getLogger(__name__)

# Objects up to this size stay in memory while they are read.
_SPOOL_BYTES = 64 << 20


def open_lakefs_files(
    source: SourceConf,
    provider: CredentialsProvider | None = None,
    lake: LakeFS | None = None,
) -> Iterator[SourceFile]:
    """Yield every file of a lakeFS source, in path order."""
    uri = LakeFSURI.parse(source.path, f"source '{source.name}'")
    if not COMMIT_ID.match(uri.ref):
        raise SourceError(
            f"source '{source.name}': {uri} names ref '{uri.ref}', which can move; "
            f"ingest reads pinned commits only. Run `datakiln lakefs pin`, and let "
            f"ingest take the commit from the dataset's lock file."
        )
    lake = lake or connect(provider)
    keys = _selected(lake, uri, source.member)
    if not keys:
        raise SourceError(
            f"source '{source.name}': no objects at {uri}"
            + (f" with member '{source.member}'" if source.member else "")
            + ". Check the path, or import the raw files with `datakiln lakefs "
            f"import <folder> lakefs://{uri.repo}/<branch>/<path>` and pin again."
        )
    for key in keys:
        display = str(LakeFSURI(uri.repo, uri.ref, key))
        folder = PurePosixPath(key).parent.name
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            for chunk in lake.open_object(uri.repo, uri.ref, key):
                spool.write(chunk)
            spool.seek(0)
            logger.debug("read %s (%d bytes)", display, spool.tell())
            yield from expand(display, folder, cast(IO[bytes], spool), source.member)


def _selected(lake: LakeFS, uri: LakeFSURI, member: str | None) -> list[str]:
    """The object keys a source's address selects, as local paths would."""
    objects = lake.list_objects(uri.repo, uri.ref, uri.list_prefix)
    if uri.is_glob:
        return sorted(key for key in objects if uri.matches(key))
    if uri.path == "" or uri.path.endswith("/"):
        return sorted(
            key
            for key in objects
            if is_archive(key)
            or member is None
            or fnmatch.fnmatchcase(key[len(uri.path) :], member)
            or fnmatch.fnmatchcase(PurePosixPath(key).name, member)
        )
    return [uri.path] if uri.path in objects else []
