"""Readers: a source's files, opened and read into batches of raw records.

One module per format; `read_source` picks the reader for each file by the
declared `format`, or by the file's extension when the format is `auto`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from datakiln.config import SourceConf
from datakiln.errors import SourceError
from datakiln.readers.base import RawBatch, RawReject, ReadStats
from datakiln.readers.delimited import read_csv, read_tsv
from datakiln.readers.files import SourceFile, open_source_files
from datakiln.readers.jsonl import read_jsonl
from datakiln.readers.mail import read_email
from datakiln.readers.parquet import read_parquet
from datakiln.readers.text import read_text

__all__ = [
    "FORMATS",
    "RawBatch",
    "RawReject",
    "ReadStats",
    "SourceFile",
    "file_format",
    "open_source_files",
    "read_source",
]

Reader = Callable[[SourceFile, SourceConf, int, ReadStats], Iterator[RawBatch]]

READERS: dict[str, Reader] = {
    "csv": read_csv,
    "tsv": read_tsv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "text": read_text,
    "email": read_email,
}
FORMATS = ("auto", *READERS)
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".eml": "email",
}


def file_format(source: SourceConf, file_name: str) -> str:
    """The format to read a file as: declared, or known from its extension."""
    if source.format != "auto":
        return source.format
    suffix = PurePosixPath(file_name.rsplit("!", 1)[-1]).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    known = ", ".join(sorted(EXTENSIONS))
    raise SourceError(
        f"source '{source.name}': cannot tell the format of {file_name} from its "
        f"name (known extensions: {known}). Declare `format:` "
        f"({', '.join(READERS)}) for this source."
    )


def read_source(
    source: SourceConf, root: Path, batch_rows: int, stats: ReadStats
) -> Iterator[tuple[SourceFile, RawBatch]]:
    """Every batch of every file of a source, in a stable order."""
    for file in open_source_files(source, root):
        stats.files += 1
        reader = READERS[file_format(source, file.name)]
        for batch in reader(file, source, batch_rows, stats):
            yield file, batch
