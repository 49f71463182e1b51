"""JSON Lines: one object per line, values keeping their JSON types."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from datakiln.config import SourceConf
from datakiln.readers.base import (
    UNDECODABLE,
    RawBatch,
    RawReject,
    ReadStats,
    frame_of,
    printable,
)
from datakiln.readers.files import SourceFile
from datakiln.readers.text import clean_lines, open_text

logger = logging.getLogger(__name__)


def read_jsonl(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    """Records of a JSON Lines file; `source_row` is the line number.

    A line that is not JSON, or is JSON but not an object, becomes a reject;
    blank lines are skipped and counted.
    """
    rows: list[int] = []
    records: list[dict[str, object]] = []
    rejects: list[RawReject] = []
    with open_text(file, source.encoding, stats, newline=None) as text:
        for line_no, line in enumerate(clean_lines(text, stats), start=1):
            if not line.strip():
                stats.blank_lines += 1
                continue
            record = _parse(line, file.name, line_no)
            if isinstance(record, RawReject):
                rejects.append(record)
                continue
            records.append(record)
            rows.append(line_no)
            if len(records) >= batch_rows:
                yield RawBatch(frame_of(records), rows, typed=True, rejects=rejects)
                rows, records, rejects = [], [], []
    if records or rejects:
        yield RawBatch(frame_of(records), rows, typed=True, rejects=rejects)


def _parse(line: str, file_name: str, line_no: int) -> dict[str, object] | RawReject:
    where = f"{file_name} line {line_no}"
    raw = printable(line.rstrip("\n"))
    if UNDECODABLE.search(line):
        return RawReject(
            line_no,
            "bad_encoding",
            f"{where}: bytes that are not valid in the file's encoding; declare "
            f"`encoding:` for this source",
            raw=raw,
        )
    try:
        value = json.loads(line)
    except ValueError as exc:
        return RawReject(line_no, "bad_json", f"{where}: not JSON ({exc})", raw=raw)
    if not isinstance(value, dict):
        found = type(value).__name__
        return RawReject(
            line_no, "not_an_object", f"{where}: a JSON {found}, not an object", raw=raw
        )
    return value
