"""What every reader yields: batches of raw records and the rows it could not read."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

# Bytes a decoder could not map are kept as lone surrogates (surrogateescape),
# so a bad row can be found and rejected instead of failing the whole file.
UNDECODABLE = re.compile("[\udc80-\udcff]")
REPLACEMENT = "\ufffd"


@dataclass
class RawReject:
    """A record that could not be read, kept with what could be made of it."""

    row: int
    reason: str
    detail: str
    values: dict[str, str | None] = field(default_factory=dict)
    # The record's text when it could not be split into columns.
    raw: str | None = None


@dataclass
class RawBatch:
    """Up to `batch_rows` records of one file, values as the file holds them.

    `typed` says whether values carry their own types (JSON, Parquet, and the
    fields of text and e-mail) or are untyped text whose types are inferred
    (CSV, TSV). `arrow_types` is the Parquet schema of the file, when there is
    one, so that type inference need not look at every value.
    """

    frame: pd.DataFrame
    rows: list[int]
    typed: bool
    rejects: list[RawReject] = field(default_factory=list)
    arrow_types: dict[str, pa.DataType] | None = None


@dataclass
class ReadStats:
    """Counts a reader keeps about what it removed or skipped."""

    files: int = 0
    nul_removed: int = 0
    blank_lines: int = 0
    empty_records: int = 0
    encodings: Counter[str] = field(default_factory=Counter)


def undecodable_column(values: dict[str, str | None]) -> str | None:
    """The first column holding bytes the declared encoding could not decode."""
    for column, value in values.items():
        if value is not None and UNDECODABLE.search(value):
            return column
    return None


def printable(text: str) -> str:
    """`text` with undecodable bytes shown as U+FFFD, safe to write as UTF-8."""
    return UNDECODABLE.sub(REPLACEMENT, text)


def frame_of(records: list[dict[str, object]]) -> pd.DataFrame:
    """Records as a frame of object columns, keeping every value exactly as given.

    Building the frame column by column avoids pandas' own inference, which
    would turn a column of large integers with a gap into floats.
    """
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    return pd.DataFrame(
        {
            name: pd.Series([r.get(name) for r in records], dtype=object)
            for name in columns
        },
        index=pd.RangeIndex(len(records)),
    )
