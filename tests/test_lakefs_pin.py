"""Raw inputs pinned to lakeFS commits, and reading them back by commit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from datakiln.config import DatasetConf, SourceConf
from datakiln.errors import SourceError
from datakiln.lakefs.client import LakeFS
from datakiln.lakefs.pin import lock_path, pin_dataset, pinned_conf, read_lock
from datakiln.lakefs.raw import import_folder
from datakiln.lakefs.source import open_lakefs_files
from datakiln.lakefs.uri import LakeFSURI


def _zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _import(lake: LakeFS, repo: str, folder: Path, files: dict[str, bytes]) -> str:
    for relpath, data in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(data)
    target = LakeFSURI.parse(f"lakefs://{repo}/raw/")
    return import_folder(lake, folder, target).commit


def _conf(*paths: str) -> DatasetConf:
    sources = [SourceConf(name=f"s{i}", path=p) for i, p in enumerate(paths)]
    return DatasetConf(sources=sources)


@pytest.fixture
def raw_repo(lake: LakeFS, lakefs_repo: str, tmp_path: Path) -> str:
    _import(lake, lakefs_repo, tmp_path / "raw", {"t/a.csv": b"id,text\n1,a\n"})
    return lakefs_repo


def test_pin_writes_the_commit_the_branch_stands_for(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    conf = _conf(f"lakefs://{raw_repo}/raw/t/*.csv", "data/raw/local.csv")
    pins, changed = pin_dataset(tmp_path, "ds", conf, lake=lake)

    assert changed
    assert list(pins) == ["s0"]
    assert pins["s0"].commit == lake.resolve(raw_repo, "raw")
    assert read_lock(tmp_path, "ds") == pins
    assert "Commit this file" in lock_path(tmp_path, "ds").read_text()


def test_pinning_an_unmoved_branch_leaves_the_lock_byte_for_byte(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    conf = _conf(f"lakefs://{raw_repo}/raw/t/")
    pin_dataset(tmp_path, "ds", conf, lake=lake)
    before = lock_path(tmp_path, "ds").read_bytes()

    _, changed = pin_dataset(tmp_path, "ds", conf, lake=lake)
    assert not changed
    assert lock_path(tmp_path, "ds").read_bytes() == before


def test_a_new_commit_on_the_branch_moves_the_pin(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    conf = _conf(f"lakefs://{raw_repo}/raw/t/")
    first, _ = pin_dataset(tmp_path, "ds", conf, lake=lake)
    newer = _import(lake, raw_repo, tmp_path / "raw", {"t/b.csv": b"id,text\n2,b\n"})

    pins, changed = pin_dataset(tmp_path, "ds", conf, lake=lake)
    assert changed
    assert pins["s0"].commit == newer != first["s0"].commit


def test_keep_holds_existing_pins_and_pins_only_new_addresses(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    old_conf = _conf(f"lakefs://{raw_repo}/raw/t/")
    first, _ = pin_dataset(tmp_path, "ds", old_conf, lake=lake)
    _import(lake, raw_repo, tmp_path / "raw", {"t/b.csv": b"id,text\n2,b\n"})

    kept, changed = pin_dataset(tmp_path, "ds", old_conf, keep=True, lake=lake)
    assert not changed and kept == first
    new_conf = _conf(f"lakefs://{raw_repo}/raw/t/b.csv")
    moved, changed = pin_dataset(tmp_path, "ds", new_conf, keep=True, lake=lake)
    assert changed and moved["s0"].commit == lake.resolve(raw_repo, "raw")


def test_a_commit_id_address_pins_without_asking_the_server(tmp_path: Path) -> None:
    commit = "a" * 64
    pins, _ = pin_dataset(tmp_path, "ds", _conf(f"lakefs://raw-data/{commit}/x.csv"))
    assert pins["s0"].commit == commit


def test_declared_sources_are_read_at_their_pinned_commit(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    conf = _conf(f"lakefs://{raw_repo}/raw/t/", "data/raw/local.csv")
    pins, _ = pin_dataset(tmp_path, "ds", conf, lake=lake)

    pinned = pinned_conf(conf, tmp_path, "ds")
    assert pinned.sources[0].path == f"lakefs://{raw_repo}/{pins['s0'].commit}/t/"
    assert pinned.sources[1].path == "data/raw/local.csv"


def test_an_unpinned_source_stops_ingest_with_the_command_to_run(
    raw_repo: str, tmp_path: Path
) -> None:
    conf = _conf(f"lakefs://{raw_repo}/raw/t/")
    with pytest.raises(SourceError, match=r"no pin\. Run `datakiln lakefs pin ds`"):
        pinned_conf(conf, tmp_path, "ds")


def test_a_pin_for_another_address_stops_ingest(
    lake: LakeFS, raw_repo: str, tmp_path: Path
) -> None:
    pin_dataset(tmp_path, "ds", _conf(f"lakefs://{raw_repo}/raw/t/"), lake=lake)
    moved = _conf(f"lakefs://{raw_repo}/raw/t/a.csv")
    with pytest.raises(SourceError, match=r"has a pin for lakefs://.*/raw/t/\. Run"):
        pinned_conf(moved, tmp_path, "ds")


def test_reader_expands_archives_at_the_pinned_commit(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    archive = _zip({"inner/a.csv": "id,text\n1,old\n", "README.txt": "not data"})
    commit = _import(lake, lakefs_repo, tmp_path / "raw", {"z/data.zip": archive})
    newer = _zip({"inner/a.csv": "id,text\n1,new\n"})
    _import(lake, lakefs_repo, tmp_path / "raw", {"z/data.zip": newer})

    source = SourceConf(
        name="z", path=f"lakefs://{lakefs_repo}/{commit}/z/*.zip", member="*.csv"
    )
    files = [
        (f.name, f.folder, f.stream.read())
        for f in open_lakefs_files(source, lake=lake)
    ]
    assert files == [
        (
            f"lakefs://{lakefs_repo}/{commit}/z/data.zip!inner/a.csv",
            "inner",
            b"id,text\n1,old\n",
        )
    ]


def test_reader_refuses_a_moving_ref(lake: LakeFS, raw_repo: str) -> None:
    source = SourceConf(name="t", path=f"lakefs://{raw_repo}/raw/t/a.csv")
    with pytest.raises(SourceError, match="names ref 'raw', which can move"):
        list(open_lakefs_files(source, lake=lake))


def test_reader_with_nothing_at_the_address_names_it(
    lake: LakeFS, raw_repo: str
) -> None:
    commit = lake.resolve(raw_repo, "raw")
    source = SourceConf(name="t", path=f"lakefs://{raw_repo}/{commit}/nothing/*.csv")
    with pytest.raises(SourceError, match="no objects at lakefs://.*/nothing/"):
        list(open_lakefs_files(source, lake=lake))
