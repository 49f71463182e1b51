"""Finding a source's files: globs, folders, archives, and what is skipped."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from datakiln.config import SourceConf
from datakiln.errors import SourceError
from datakiln.readers import file_format, open_source_files


def read_all(source: SourceConf, root: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (folder, bytes) of every file the source yields, in order."""
    return {
        f.name: (f.folder, f.stream.read()) for f in open_source_files(source, root)
    }


def test_a_glob_yields_matching_files_in_name_order(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv", "c.txt"):
        (tmp_path / name).write_text(name)

    files = read_all(SourceConf(name="s", path="*.csv"), tmp_path)

    assert list(files) == ["a.csv", "b.csv"]
    assert files["a.csv"] == (tmp_path.name, b"a.csv")


def test_a_folder_is_read_recursively_without_hidden_files(tmp_path: Path) -> None:
    for rel in ("corpus/pos/1.txt", "corpus/neg/2.txt", "corpus/.git/x", "corpus/.hid"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)

    files = read_all(SourceConf(name="s", path="corpus"), tmp_path)

    assert files == {
        "corpus/neg/2.txt": ("neg", b"corpus/neg/2.txt"),
        "corpus/pos/1.txt": ("pos", b"corpus/pos/1.txt"),
    }


def test_zip_members_are_filtered_by_the_member_glob(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("data/one.csv", "1")
        archive.writestr("data/readme.md", "no")
        archive.writestr("__MACOSX/data/._one.csv", "junk")
        archive.writestr("two.csv", "2")

    files = read_all(SourceConf(name="s", path="a.zip", member="*.csv"), tmp_path)

    assert files == {"a.zip!data/one.csv": ("data", b"1"), "a.zip!two.csv": ("", b"2")}


def test_tar_gz_members_are_read_in_archive_order(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as archive:
        for name, data in (("x/2.txt", b"second"), ("x/1.txt", b"first")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    files = read_all(SourceConf(name="s", path="a.tar.gz"), tmp_path)

    assert files == {
        "a.tar.gz!x/2.txt": ("x", b"second"),
        "a.tar.gz!x/1.txt": ("x", b"first"),
    }


def test_a_gz_file_is_read_decompressed_under_its_inner_name(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n'))
    source = SourceConf(name="s", path="rows.jsonl.gz")

    files = read_all(source, tmp_path)

    assert files == {"rows.jsonl": (tmp_path.name, b'{"a": 1}\n')}
    assert file_format(source, "rows.jsonl") == "jsonl"


def test_an_archive_with_no_matching_member_is_an_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("notes.md", "no")

    with pytest.raises(SourceError, match=r"no files to read at 'a.zip' with member"):
        read_all(SourceConf(name="s", path="a.zip", member="*.csv"), tmp_path)


def test_a_missing_path_says_to_fix_the_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"does not exist. Fix `path`"):
        read_all(SourceConf(name="s", path="nowhere.csv"), tmp_path)


def test_a_file_that_is_not_a_zip_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "fake.zip").write_text("not a zip")

    with pytest.raises(SourceError, match=r"fake.zip: not a readable zip archive"):
        read_all(SourceConf(name="s", path="fake.zip"), tmp_path)


def test_an_unknown_extension_asks_for_a_declared_format() -> None:
    with pytest.raises(
        SourceError, match=r"cannot tell the format of data.xml.*`format:`"
    ):
        file_format(SourceConf(name="s", path="data.xml"), "data.xml")


def test_a_declared_format_wins_over_the_extension() -> None:
    source = SourceConf(name="s", path="mail", format="email")

    assert file_format(source, "mail/spam/49960") == "email"
