"""Finding the files of a source and opening their bytes.

`open_source_files` is the one place that turns a source's `path` into byte
streams: a local file, a glob, a folder, or an archive (zip, tar, tar.gz, gz)
expanded member by member. lakeFS sources (`lakefs://repo/commit/path`) plug
in here: datakiln.lakefs.source yields their objects through `expand`, which
applies the same archive and member rules to any byte stream.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import logging
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from datakiln.config import SourceConf
from datakiln.errors import SourceError

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
GLOB_CHARS = frozenset("*?[")
# Archive debris that is never data.
JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, open for reading while the iteration is on it.

    `name` is what provenance records (`archive.zip!member` for a member);
    `folder` is the name of the folder holding it, for `folder_column`.
    """

    name: str
    folder: str
    stream: IO[bytes]


def open_source_files(source: SourceConf, root: Path) -> Iterator[SourceFile]:
    """Yield every file a source declares, in a stable order.

    Each stream is closed when the iteration moves on, so read it before asking
    for the next file.
    """
    if source.path.startswith("lakefs://"):
        # Objects at a pinned commit, expanded by the same rules as local files.
        from datakiln.lakefs.source import open_lakefs_files

        yield from open_lakefs_files(source)
        return
    if "://" in source.path:
        raise SourceError(
            f"source '{source.name}': path '{source.path}' has a URL scheme ingest "
            f"does not read. Use a local path, glob or archive."
        )
    found = False
    for path in local_paths(source, root):
        display = _display(path, root)
        with path.open("rb") as stream:
            for file in expand(display, path.parent.name, stream, source.member):
                found = True
                yield file
    if not found:
        raise SourceError(
            f"source '{source.name}': no files to read at '{source.path}'"
            + (f" with member '{source.member}'" if source.member else "")
            + ". Check the path (relative to the repository root) and `member`; "
            "for the example data run `make data`."
        )


def local_paths(source: SourceConf, root: Path) -> list[Path]:
    """The local files a source's path names: a file, a folder or a glob."""
    base = Path(source.path)
    if not base.is_absolute():
        base = root / base
    if GLOB_CHARS & set(source.path):
        matches = sorted(Path(p) for p in glob.glob(str(base), recursive=True))
        return [p for p in matches if p.is_file() and not _is_junk(p.name)]
    if base.is_dir():
        return sorted(
            p
            for p in base.rglob("*")
            if p.is_file()
            and not any(_is_junk(part) for part in p.relative_to(base).parts)
            and (
                is_archive(p.name)
                or _member_matches(p.relative_to(base).as_posix(), source.member)
            )
        )
    if base.is_file():
        return [base]
    raise SourceError(
        f"source '{source.name}': '{base}' does not exist. Fix `path` in the "
        f"dataset's declaration; for the example data run `make data`."
    )


def is_archive(name: str) -> bool:
    return name.lower().endswith((".zip", *TAR_SUFFIXES))


def expand(
    name: str, folder: str, stream: IO[bytes], member: str | None
) -> Iterator[SourceFile]:
    """Yield the files inside one byte stream: archive members, or itself."""
    lower = name.lower()
    if lower.endswith(".zip"):
        yield from _zip_members(name, stream, member)
    elif lower.endswith(TAR_SUFFIXES):
        yield from _tar_members(name, stream, member)
    elif lower.endswith(".gz"):
        with gzip.GzipFile(fileobj=stream, mode="rb") as inner:
            yield SourceFile(name[: -len(".gz")], folder, cast(IO[bytes], inner))
    else:
        yield SourceFile(name, folder, stream)


def _zip_members(
    name: str, stream: IO[bytes], member: str | None
) -> Iterator[SourceFile]:
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{name}: not a readable zip archive ({exc}).") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not _wanted(info.filename, member):
                continue
            with archive.open(info) as inner:
                yield SourceFile(
                    f"{name}!{info.filename}", _folder(info.filename), inner
                )


def _tar_members(
    name: str, stream: IO[bytes], member: str | None
) -> Iterator[SourceFile]:
    with _open_tar(name, stream) as archive:
        for info in archive:
            if not info.isfile() or not _wanted(info.name, member):
                continue
            inner = archive.extractfile(info)
            if inner is None:
                continue
            with inner:
                yield SourceFile(f"{name}!{info.name}", _folder(info.name), inner)


def _open_tar(name: str, stream: IO[bytes]) -> tarfile.TarFile:
    try:
        # Streaming mode reads the archive once, in order, even when compressed.
        return tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise SourceError(f"{name}: not a readable tar archive ({exc}).") from None


def _wanted(member_name: str, pattern: str | None) -> bool:
    parts = PurePosixPath(member_name).parts
    if any(_is_junk(part) for part in parts):
        return False
    return _member_matches(member_name, pattern)


def _member_matches(member_name: str, pattern: str | None) -> bool:
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(member_name, pattern) or fnmatch.fnmatchcase(
        PurePosixPath(member_name).name, pattern
    )


def _is_junk(part: str) -> bool:
    return part in JUNK_PARTS or part.startswith(".")


def _folder(member_name: str) -> str:
    return PurePosixPath(member_name).parent.name


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
