"""`datakiln lakefs import`: a raw folder into a lakeFS branch, only changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lakefs_fixtures import FAST_RETRY, StartServer

from datakiln.errors import LakeFSError
from datakiln.lakefs.client import LakeFS, LakeFSUnavailableError
from datakiln.lakefs.raw import import_folder
from datakiln.lakefs.uri import LakeFSURI


def raw_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relpath, data in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {
    "tweets/a.csv": b"id,text\n1,hello\n",
    "tweets/b.csv": b"id,text\n2,world\n",
    "news/c.jsonl": b'{"id": 3}\n',
}


def test_import_uploads_the_folder_and_commits_with_metadata(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/incoming/")
    result = import_folder(lake, folder, target, message="first raw drop")

    assert result.committed
    assert sorted(result.sync.uploaded) == sorted(f"incoming/{p}" for p in FILES)
    assert lake.resolve(lakefs_repo, "raw") == result.commit
    commit = lake.repository(lakefs_repo).commit(result.commit).get_commit()
    assert commit.message == "first raw drop"
    assert commit.metadata["files"] == "3"
    assert commit.metadata["source_folder"] == str(folder.resolve())
    assert (
        lake.read_bytes(lakefs_repo, result.commit, "incoming/tweets/a.csv")
        == (FILES["tweets/a.csv"])
    )


def test_importing_the_same_folder_again_uploads_and_commits_nothing(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/incoming")
    first = import_folder(lake, folder, target)
    again = import_folder(lake, folder, target)

    assert not again.committed and again.sync.uploaded == []
    assert again.commit == first.commit == lake.resolve(lakefs_repo, "raw")


def test_only_the_changed_file_is_uploaded(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/")
    first = import_folder(lake, folder, target)
    (folder / "tweets" / "b.csv").write_bytes(b"id,text\n2,changed\n")
    second = import_folder(lake, folder, target)

    assert second.sync.uploaded == ["tweets/b.csv"]
    assert second.committed and second.commit != first.commit


def test_mirror_deletes_objects_the_folder_no_longer_has(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/")
    import_folder(lake, folder, target)
    (folder / "news" / "c.jsonl").unlink()

    kept = import_folder(lake, folder, target)
    assert kept.sync.deleted == [] and not kept.committed
    mirrored = import_folder(lake, folder, target, mirror=True)
    assert mirrored.sync.deleted == ["news/c.jsonl"]
    assert "news/c.jsonl" not in lake.list_objects(lakefs_repo, "raw", "")


def test_import_into_protected_main_is_refused(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/main/raw/")
    with pytest.raises(LakeFSError, match="branch 'main' is protected.*only by merge"):
        import_folder(lake, folder, target)


def test_uncommitted_changes_elsewhere_on_the_branch_are_refused_with_paths(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    lake.create_branch(lakefs_repo, "raw", "main")
    branch = lake.repository(lakefs_repo).branch("raw")
    branch.object("elsewhere/draft.csv").upload(b"half done", pre_sign=False)
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/incoming/")

    with pytest.raises(
        LakeFSError, match=r"uncommitted changes.*\n  elsewhere/draft\.csv"
    ):
        import_folder(lake, folder, target)
    assert lake.list_objects(lakefs_repo, "raw", "incoming/") == {}


def test_glob_target_is_refused(lake: LakeFS, lakefs_repo: str, tmp_path: Path) -> None:
    folder = raw_folder(tmp_path / "raw", FILES)
    with pytest.raises(LakeFSError, match="not a glob"):
        import_folder(
            lake, folder, LakeFSURI.parse(f"lakefs://{lakefs_repo}/raw/*.csv")
        )


def test_server_killed_during_import_then_restarted_completes_the_import(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = start_server(tmp_path / "data")
    lake = LakeFS(running.credentials, FAST_RETRY)
    lake.ensure_repository("crash", "local://crash")
    lake.create_branch("crash", "raw", "main")
    before = lake.resolve("crash", "raw")
    folder = raw_folder(tmp_path / "raw", FILES)
    target = LakeFSURI.parse("lakefs://crash/raw/")

    def kill_before_second(relpath: str, number: int, total: int) -> None:
        if number == 2:
            running.kill()

    with pytest.raises(LakeFSUnavailableError, match=rf"lakeFS at {running.endpoint} "):
        import_folder(lake, folder, target, on_upload=kill_before_second)

    restarted = start_server(tmp_path / "data", port=running.port)
    lake = LakeFS(restarted.credentials, FAST_RETRY)
    assert lake.resolve("crash", "raw") == before
    result = import_folder(lake, folder, target)
    assert result.committed
    assert sorted(lake.list_objects("crash", result.commit, "")) == sorted(FILES)
