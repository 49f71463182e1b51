"""Decoding text files (BOMs, UTF-16, NUL bytes) and reading plain-text records."""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Iterator
from typing import IO, Any

from datakiln.config import SourceConf
from datakiln.readers.base import (
    RawBatch,
    RawReject,
    ReadStats,
    frame_of,
    printable,
    undecodable_column,
)
from datakiln.readers.files import SourceFile

logger = logging.getLogger(__name__)

SNIFF_BYTES = 1 << 16
# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
TEXT_CHUNK = 1 << 20


def detect_encoding(head: bytes) -> str:
    """The codec for a file starting with `head`: from its BOM, else UTF-16 by
    the pattern of zero bytes that ASCII text has in it, else UTF-8."""
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec
    return _utf16_without_bom(head) or "utf-8"


def _utf16_without_bom(head: bytes) -> str | None:
    pairs = len(head) // 2
    if pairs < 2:
        return None
    zeros_even = head[0 : pairs * 2 : 2].count(0) / pairs
    zeros_odd = head[1 : pairs * 2 : 2].count(0) / pairs
    # Mostly-ASCII UTF-16 has a zero in every other byte; a UTF-8 file with a
    # few stray NULs has them at both offsets alike.
    if zeros_odd > 0.3 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.3 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


def open_text(
    file: SourceFile, encoding: str, stats: ReadStats, newline: str | None
) -> io.TextIOWrapper:
    """A text stream over a file, its encoding detected when `encoding` is auto.

    Undecodable bytes become lone surrogates, which the readers reject row by
    row (reason `bad_encoding`) so one bad row does not fail the file.
    """
    head = file.stream.read(SNIFF_BYTES)
    codec = detect_encoding(head) if encoding == "auto" else encoding
    stats.encodings[codecs.lookup(codec).name] += 1
    logger.debug("%s: reading as %s", file.name, codec)
    buffered = io.BufferedReader(_Peeked(head, file.stream))
    return io.TextIOWrapper(
        buffered,
        encoding=codec,
        errors="surrogateescape",
        newline=newline,
    )


class _Peeked(io.RawIOBase):
    """A stream whose first bytes were read ahead, to sniff its encoding."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(target), len(self._head))
            target[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(target))
        target[: len(data)] = data
        return len(data)


def clean_lines(lines: Iterator[str], stats: ReadStats) -> Iterator[str]:
    """Lines without NUL characters (counted) and without a leading BOM."""
    first = True
    for line in lines:
        if first:
            line = line.removeprefix("\ufeff")
            first = False
        if "\x00" in line:
            stats.nul_removed += line.count("\x00")
            line = line.replace("\x00", "")
        yield line


def read_text(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    """Plain text: one record per file, or records split on `record_separator`."""
    batch = RawBatch(frame_of([]), [], typed=True)
    records: list[dict[str, object]] = []
    for row, text in enumerate(_text_records(file, source, stats), start=1):
        if text == "":
            stats.empty_records += 1
            continue
        bad = undecodable_column({"text": text})
        if bad is not None:
            batch.rejects.append(
                RawReject(
                    row,
                    "bad_encoding",
                    f"{file.name} record {row}: bytes that are not valid in the "
                    f"file's encoding; declare `encoding:` for this source",
                    {"text": printable(text)},
                )
            )
            continue
        records.append({"text": text})
        batch.rows.append(row)
        if len(records) >= batch_rows:
            batch.frame = frame_of(records)
            yield batch
            batch, records = RawBatch(frame_of([]), [], typed=True), []
    if records or batch.rejects:
        batch.frame = frame_of(records)
        yield batch


def _text_records(
    file: SourceFile, source: SourceConf, stats: ReadStats
) -> Iterator[str]:
    # Universal newlines, so a "\n" separator also splits Windows line ends.
    with open_text(file, source.encoding, stats, newline=None) as text:
        chunks = clean_lines(iter(lambda: text.read(TEXT_CHUNK), ""), stats)
        separator = source.record_separator
        if not separator:
            yield "".join(chunks)
            return
        pending = ""
        for chunk in chunks:
            pieces = (pending + chunk).split(separator)
            pending = pieces.pop()
            yield from pieces
        if pending:
            yield pending
