"""CSV and TSV: every value read as text, types inferred later from whole columns."""

from __future__ import annotations

import csv
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
    """Records of a delimited file. A record that is malformed (a quote never
    closed, text after a closing quote), has the wrong number of fields, or
    holds bytes the encoding cannot decode becomes a reject with its text."""
    delimiter = source.delimiter or default_delimiter
    csv.field_size_limit(FIELD_LIMIT)
    # newline="" hands CR and CRLF inside quoted fields to the csv module intact.
    with open_text(file, source.encoding, stats, newline="") as text:
        lines = _Recorder(clean_lines(text, stats))
        # Strict, so a quote left open fails at the end of the file instead of
        # quietly swallowing every line after it into one field.
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        names = list(source.columns) or _header(reader, lines, file, stats)
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
                rejects.append(
                    RawReject(row, "malformed_csv", detail, raw=lines.take())
                )
                continue
            raw = lines.take()
            if not fields:
                stats.blank_lines += 1
                continue
            row += 1
            reject = _check(fields, names, raw, file.name, row, start)
            if reject is not None:
                rejects.append(reject)
                continue
            records.append(fields)
            rows.append(row)
            if len(records) >= batch_rows:
                yield _batch(records, rows, names, rejects)
                rows, records, rejects = [], [], []
        # A file of no records still yields once, so its columns are known.
        if records or rejects or row == 0:
            yield _batch(records, rows, names, rejects)


class _Recorder:
    """Lines handed to the csv module, kept until the record they make is done,
    so a rejected record keeps its text exactly as the file has it."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._taken: list[str] = []

    def __iter__(self) -> _Recorder:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._taken.append(line)
        return line

    def take(self) -> str:
        """The text of the lines read since the last call, without the last
        line ending."""
        text = "".join(self._taken)
        self._taken.clear()
        return printable(text.removesuffix("\n").removesuffix("\r"))


def _header(
    reader: Iterator[list[str]], lines: _Recorder, file: SourceFile, stats: ReadStats
) -> list[str]:
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return []
        except csv.Error as exc:
            raise SourceError(
                f"{file.name}: the header is not valid CSV ({exc}): "
                f"{lines.take()[:200]!r}. Fix the file, or declare `columns:` and "
                f"`delimiter:` for this source."
            ) from None
        lines.take()
        if fields:
            break
        stats.blank_lines += 1
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


def _check(
    fields: list[str],
    names: list[str],
    raw: str,
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
            raw=raw,
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
            raw=raw,
        )
    return None


def _batch(
    records: list[list[str]],
    rows: list[int],
    names: list[str],
    rejects: list[RawReject],
) -> RawBatch:
    frame = pd.DataFrame(records, columns=names, dtype=object)
    return RawBatch(frame, rows, typed=False, rejects=rejects)
