"""CSV and TSV: every value read as text, types inferred later from whole columns."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator

import pandas as pd

from datakiln.config import SourceConf
from datakiln.errors import SourceError
from datakiln.readers.base import UNDECODABLE, RawBatch, RawReject, ReadStats, printable
from datakiln.readers.files import SourceFile
from datakiln.readers.text import clean_lines, open_text

logger = logging.getLogger(__name__)

# The csv module refuses fields over 128 KiB by default; a long article is one.
FIELD_LIMIT = 2**31 - 1


def read_csv(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    yield from read_delimited(file, source, batch_rows, stats, ",")


def read_tsv(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    yield from read_delimited(file, source, batch_rows, stats, "\t")


def read_delimited(
    file: SourceFile,
    source: SourceConf,
    batch_rows: int,
    stats: ReadStats,
    default_delimiter: str,
) -> Iterator[RawBatch]:
    """Records of a delimited file; rows with the wrong number of fields, or
    bytes the encoding cannot decode, become rejects with their line number."""
    delimiter = source.delimiter or default_delimiter
    csv.field_size_limit(FIELD_LIMIT)
    # newline="" hands CR and CRLF inside quoted fields to the csv module intact.
    with open_text(file, source.encoding, stats, newline="") as text:
        reader = csv.reader(clean_lines(text, stats), delimiter=delimiter)
        names = list(source.columns) or _header(reader, file, stats)
        if not names:
            logger.warning("%s: empty file, no header and no records", file.name)
            return
        rows: list[int] = []
        records: list[list[str]] = []
        rejects: list[RawReject] = []
        row = 0
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                row += 1
                detail = f"{file.name} line {start}: {exc}"
                rejects.append(RawReject(row, "malformed_csv", detail))
                continue
            if not fields:
                stats.blank_lines += 1
                continue
            row += 1
            reject = _check(fields, names, delimiter, file.name, row, start)
            if reject is not None:
                rejects.append(reject)
                continue
            records.append(fields)
            rows.append(row)
            if len(records) >= batch_rows:
                yield _batch(records, rows, names, rejects)
                rows, records, rejects = [], [], []
        if records or rejects:
            yield _batch(records, rows, names, rejects)


def _header(
    reader: Iterator[list[str]], file: SourceFile, stats: ReadStats
) -> list[str]:
    for fields in reader:
        if not fields:
            stats.blank_lines += 1
            continue
        if UNDECODABLE.search("".join(fields)):
            raise SourceError(
                f"{file.name}: the header holds bytes that are not valid in the "
                f"detected encoding. Declare the file's `encoding:` for this source."
            )
        names = [name.strip() or f"column_{i}" for i, name in enumerate(fields, 1)]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise SourceError(
                f"{file.name}: the header names {', '.join(map(repr, twice))} more "
                f"than once. Give the columns distinct names, or declare `columns:` "
                f"for this source and the header is read as names no more."
            )
        return names
    return []


def _check(
    fields: list[str],
    names: list[str],
    delimiter: str,
    file_name: str,
    row: int,
    line: int,
) -> RawReject | None:
    if len(fields) != len(names):
        return RawReject(
            row,
            "wrong_field_count",
            f"{file_name} line {line}: expected {len(names)} fields, found "
            f"{len(fields)}",
            raw=printable(_joined(fields, delimiter)),
        )
    if UNDECODABLE.search("".join(fields)):
        values = dict(zip(names, fields, strict=True))
        bad = next(n for n, v in values.items() if UNDECODABLE.search(v))
        return RawReject(
            row,
            "bad_encoding",
            f"{file_name} line {line}: column '{bad}' holds bytes that are not "
            f"valid in the file's encoding; declare `encoding:` for this source",
            {name: printable(value) for name, value in values.items()},
        )
    return None


def _joined(fields: list[str], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue()


def _batch(
    records: list[list[str]],
    rows: list[int],
    names: list[str],
    rejects: list[RawReject],
) -> RawBatch:
    frame = pd.DataFrame(records, columns=names, dtype=object)
    return RawBatch(frame, rows, typed=False, rejects=rejects)
