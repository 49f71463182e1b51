"""Decoding text: BOMs, UTF-16 without a BOM, NUL characters."""

from __future__ import annotations

import codecs
import io

import pytest

from datakiln.readers.base import ReadStats
from datakiln.readers.files import SourceFile
from datakiln.readers.text import clean_lines, detect_encoding, open_text


@pytest.mark.parametrize(
    ("head", "codec"),
    [
        (codecs.BOM_UTF8 + b"id,text", "utf-8-sig"),
        (codecs.BOM_UTF16_LE + "id".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + "id".encode("utf-16-be"), "utf-16"),
        (codecs.BOM_UTF32_LE + "id".encode("utf-32-le"), "utf-32"),
        ("id\ttext\n1\tx\n".encode("utf-16-le"), "utf-16-le"),
        ("id\ttext\n1\tx\n".encode("utf-16-be"), "utf-16-be"),
        (b"id,text\n1,a\x00b\n2,c\x00\x00d\n", "utf-8"),
        ("naïve café".encode(), "utf-8"),
        (b"", "utf-8"),
    ],
)
def test_detect_encoding(head: bytes, codec: str) -> None:
    assert detect_encoding(head) == codec


def lines_of(data: bytes, encoding: str, stats: ReadStats) -> list[str]:
    file = SourceFile("f.txt", "", io.BytesIO(data))
    with open_text(file, encoding, stats, newline="") as text:
        return list(clean_lines(text, stats))


def test_a_declared_codec_still_loses_the_bom_and_counts_nuls() -> None:
    stats = ReadStats()
    data = codecs.BOM_UTF16_LE + "a\x00b\r\nc\n".encode("utf-16-le")

    lines = lines_of(data, "utf-16-le", stats)

    assert lines == ["ab\r\n", "c\n"]
    assert stats.nul_removed == 1
    assert stats.encodings == {"utf-16-le": 1}


def test_a_file_longer_than_the_sniffed_head_is_read_whole() -> None:
    stats = ReadStats()
    data = codecs.BOM_UTF8 + b"".join(b"line %d\n" % n for n in range(20_000))

    lines = lines_of(data, "auto", stats)

    assert len(lines) == 20_000
    assert lines[0] == "line 0\n" and lines[-1] == "line 19999\n"
