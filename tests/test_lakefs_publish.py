"""The lakefs publish target against a real server: branch, commit, merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MakeContext
from lakefs_fixtures import FAST_RETRY, StartServer

from datakiln.audit import log_path
from datakiln.lakefs.client import LakeFS, LakeFSAuthError, LakeFSUnavailableError
from datakiln.lakefs.publish import (
    Build,
    PublishRefused,
    publish_folder,
    publish_lakefs,
)
from datakiln.lakefs.versions import AWAITING_REVIEW, MERGED, read_ref, ref_path
from datakiln.stage import StageContext

Publish = Callable[..., object]


def built_folder(root: Path, rows: int = 3, card: str = "# tiny\n") -> Path:
    """A published folder as the publish stage leaves it."""
    root.mkdir(parents=True, exist_ok=True)
    for split, count in {"train": rows, "validation": 1, "test": 1}.items():
        (root / f"{split}.parquet").write_bytes(f"{split}:{count}".encode() * 10)
    (root / "README.md").write_text(card)
    files = {
        f"{s}.parquet": {"rows": n}
        for s, n in (("train", rows), ("validation", 1), ("test", 1))
    }
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return root


def build(params_hash: str = "0123456789abcdef", rows: int = 3) -> Build:
    return Build(
        "tiny",
        "a1b2c3d4e5f60718",
        params_hash,
        {"train": rows, "validation": 1, "test": 1},
    )


def heads(lake: LakeFS, repo: str) -> dict[str, str]:
    branches = lake.repository(repo).branches()
    return {b.id: lake.resolve(repo, b.id) for b in branches}


def test_publish_commits_on_a_build_branch_and_merges_into_main(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    ref = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)

    assert ref.status == MERGED
    assert ref.build_branch == "tiny-a1b2c3d4e5-01234567"
    assert lake.resolve(lakefs_repo, "main") == ref.merge_commit
    assert lake.is_ancestor(lakefs_repo, ref.commit, "main")
    metadata = lake.commit_metadata(lakefs_repo, ref.commit)
    assert metadata["git_commit"] == "a1b2c3d4e5f60718"
    assert metadata["params_hash"] == "0123456789abcdef"
    assert (metadata["rows_train"], metadata["rows_total"]) == ("3", "5")
    assert metadata["dataset"] == "tiny" and "datakiln_version" in metadata
    assert sorted(lake.list_objects(lakefs_repo, "main", "datasets/tiny/")) == sorted(
        f"datasets/tiny/{p.name}" for p in folder.iterdir()
    )


def test_publishing_the_same_data_again_makes_no_commit(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    first = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    before = heads(lake, lakefs_repo)

    again = publish_folder(
        lake, folder, build(), lakefs_repo, "main", merge=True, previous=first
    )
    assert again == first
    # Without the earlier ref file (a fresh checkout), still no commit.
    fresh = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    assert fresh.status == MERGED
    assert heads(lake, lakefs_repo) == before


def test_files_outside_the_manifest_stay_local(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    first = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    (folder / "audit.jsonl").write_text('{"seq": 0}\n')

    again = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    assert again.merge_commit == first.merge_commit
    listed = lake.list_objects(lakefs_repo, "main", "datasets/tiny/")
    assert "datasets/tiny/audit.jsonl" not in listed
    assert "datasets/tiny/manifest.json" in listed


def test_a_commit_carries_the_audit_log_but_the_log_alone_makes_none(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    log = folder / "audit.jsonl"
    log.write_text('{"seq": 0}\n')
    first = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    audit = "datasets/tiny/audit.jsonl"
    assert lake.read_bytes(lakefs_repo, first.commit, audit) == b'{"seq": 0}\n'

    # The log grew (this run's entries), the data did not: no commit.
    log.write_text('{"seq": 0}\n{"seq": 1}\n')
    before = heads(lake, lakefs_repo)
    again = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    assert again.merge_commit == first.merge_commit
    assert heads(lake, lakefs_repo) == before
    assert lake.read_bytes(lakefs_repo, "main", audit) == b'{"seq": 0}\n'

    # New data makes a commit, which takes the log as it now stands.
    built_folder(folder, rows=4)
    changed = publish_folder(
        lake, folder, build("fedcba9876543210", rows=4), lakefs_repo, "main", merge=True
    )
    assert changed.merge_commit != first.merge_commit
    assert lake.read_bytes(lakefs_repo, "main", audit) == log.read_bytes()


def test_the_same_data_built_at_a_later_git_commit_makes_no_commit(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    card = "# tiny\n\n- git commit: `{}` (clean working tree)\n- datakiln 0.1.0\n"
    folder = built_folder(tmp_path / "tiny", card=card.format("a1b2c3d4e5f60718"))
    first = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    before = heads(lake, lakefs_repo)

    # The commit that records the ref file: same data, another git commit.
    built_folder(folder, card=card.format("99887766554433221100"))
    later = Build("tiny", "99887766554433221100", build().params_hash, build().rows)
    again = publish_folder(lake, folder, later, lakefs_repo, "main", merge=True)

    assert again.merge_commit == first.merge_commit
    assert heads(lake, lakefs_repo) == before

    # Any other change to the card is a change.
    built_folder(folder, card=card.format("99887766554433221100") + "more\n")
    changed = publish_folder(lake, folder, later, lakefs_repo, "main", merge=True)
    assert changed.merge_commit != first.merge_commit


def test_a_build_awaiting_review_is_not_committed_again_for_its_audit_log(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    log = folder / "audit.jsonl"
    log.write_text('{"seq": 0}\n')
    first = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=False)

    log.write_text('{"seq": 0}\n{"seq": 1}\n')
    again = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=False)

    assert again == first
    assert lake.resolve(lakefs_repo, first.build_branch) == first.commit


def test_a_new_build_uploads_only_the_changed_objects(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    built_folder(folder, rows=4)
    uploaded: list[str] = []

    ref = publish_folder(
        lake,
        folder,
        build("fedcba9876543210", rows=4),
        lakefs_repo,
        "main",
        merge=True,
        on_upload=lambda path, n, total: uploaded.append(path),
    )
    assert sorted(uploaded) == ["manifest.json", "train.parquet"]
    assert (
        ref.status == MERGED and lake.resolve(lakefs_repo, "main") == ref.merge_commit
    )


def test_review_leaves_the_build_branch_unmerged(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    main_before = lake.resolve(lakefs_repo, "main")
    folder = built_folder(tmp_path / "tiny")
    ref = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=False)

    assert (ref.status, ref.merge_commit) == (AWAITING_REVIEW, None)
    assert lake.resolve(lakefs_repo, "main") == main_before
    assert lake.resolve(lakefs_repo, ref.build_branch) == ref.commit
    again = publish_folder(lake, folder, build(), lakefs_repo, "main", merge=False)
    assert again == ref


def test_dirty_target_branch_is_refused_with_its_paths(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    lake.create_branch(lakefs_repo, "staging", "main")
    staging = lake.repository(lakefs_repo).branch("staging")
    staging.object("notes/wip.txt").upload(b"half done", pre_sign=False)
    before = heads(lake, lakefs_repo)

    with pytest.raises(
        PublishRefused, match=r"staging has uncommitted changes.*\n  notes/wip\.txt"
    ):
        publish_folder(
            lake,
            built_folder(tmp_path / "t"),
            build(),
            lakefs_repo,
            "staging",
            merge=True,
        )
    assert heads(lake, lakefs_repo) == before


def test_conflicting_merge_is_refused_with_paths_and_nothing_merged(
    lake: LakeFS, lakefs_repo: str, tmp_path: Path
) -> None:
    folder = built_folder(tmp_path / "tiny")
    publish_folder(lake, folder, build(), lakefs_repo, "main", merge=True)
    built_folder(folder, rows=4, card="# tiny, second build\n")
    merged_by_someone: list[str] = []

    def someone_edits_the_card(path: str, number: int, total: int) -> None:
        # While the build uploads, a colleague merges their own card into main.
        if merged_by_someone:
            return
        lake.create_branch(lakefs_repo, "hotfix", "main")
        hotfix = lake.repository(lakefs_repo).branch("hotfix")
        hotfix.object("datasets/tiny/README.md").upload(
            b"# edited by hand\n", pre_sign=False
        )
        hotfix.commit("edit the card by hand")
        merged_by_someone.append(hotfix.merge_into("main"))

    with pytest.raises(
        PublishRefused, match=r"refused: both changed.*\n  datasets/tiny/README\.md\n"
    ):
        publish_folder(
            lake,
            folder,
            build("fedcba9876543210", rows=4),
            lakefs_repo,
            "main",
            merge=True,
            on_upload=someone_edits_the_card,
        )
    assert lake.resolve(lakefs_repo, "main") == merged_by_someone[0]
    card = lake.read_bytes(lakefs_repo, "main", "datasets/tiny/README.md")
    assert card == b"# edited by hand\n"


def test_server_killed_during_upload_leaves_main_alone_and_a_rerun_completes(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = start_server(tmp_path / "data")
    lake = LakeFS(running.credentials, FAST_RETRY)
    lake.ensure_repository("crash", "local://crash")
    lake.protect_branch("crash", "main")
    main_before = lake.resolve("crash", "main")
    folder = built_folder(tmp_path / "tiny")

    def kill_midway(path: str, number: int, total: int) -> None:
        if number == 3:
            running.kill()

    with pytest.raises(
        LakeFSUnavailableError, match=rf"lakeFS at {running.endpoint} is unavailable"
    ):
        publish_folder(
            lake, folder, build(), "crash", "main", merge=True, on_upload=kill_midway
        )

    restarted = start_server(tmp_path / "data", port=running.port)
    lake = LakeFS(restarted.credentials, FAST_RETRY)
    assert lake.resolve("crash", "main") == main_before
    ref = publish_folder(lake, folder, build(), "crash", "main", merge=True)
    assert ref.status == MERGED
    assert len(lake.list_objects("crash", "main", "datasets/tiny/")) == 5


# --------------------------------------------------------------- as a target


@pytest.fixture
def lakectl_env(monkeypatch: pytest.MonkeyPatch, lake: LakeFS, tmp_path: Path) -> None:
    creds = lake.credentials
    monkeypatch.setenv("LAKECTL_CONFIG_FILE", str(tmp_path / "no-such-lakectl.yaml"))
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", creds.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", creds.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", creds.secret_access_key)


def _stage_context(
    make_context: MakeContext,
    repo: str,
    review: bool = False,
    gates_passed: bool = True,
) -> StageContext:
    ctx = make_context(
        "publish",
        {
            "sources": [{"name": "s", "path": "data/raw/s.csv"}],
            "publish": {"target": "lakefs", "lakefs_repo": repo, "review": review},
        },
        dataset="tiny",
    )
    gates = {"min_rows": {"passed": True}, "class_balance": {"passed": gates_passed}}
    path = ctx.paths.metrics("validate")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": {"passed": True}, "gates": gates}))
    built_folder(ctx.paths.published_dir)
    return ctx


def test_target_publishes_merges_and_writes_the_ref_file(
    lake: LakeFS, lakefs_repo: str, lakectl_env: None, make_context: MakeContext
) -> None:
    ctx = _stage_context(make_context, lakefs_repo)
    log = log_path(ctx.root, "tiny")
    log.parent.mkdir(parents=True)
    log.write_text('{"stage": "split"}\n')

    reported = publish_lakefs(ctx, ctx.paths.published_dir)

    ref = read_ref(ctx.root, "tiny")
    assert ref is not None and ref.status == MERGED
    assert ref.merge_commit == lake.resolve(lakefs_repo, "main")
    text = ref_path(ctx.root, "tiny").read_text()
    assert f"uri: lakefs://{lakefs_repo}/{ref.merge_commit}/datasets/tiny/" in text
    assert lake.credentials.secret_access_key not in text
    # The metrics name the commits (the audit entry takes them from there), and
    # the commit holds the audit log as it stood.
    assert reported == {
        "lakefs_repository": lakefs_repo,
        "lakefs_branch": "main",
        "lakefs_build_branch": ref.build_branch,
        "lakefs_commit": ref.commit,
        "lakefs_merge_commit": ref.merge_commit,
        "lakefs_status": MERGED,
    }
    audit = lake.read_bytes(lakefs_repo, ref.commit, "datasets/tiny/audit.jsonl")
    assert audit == log.read_bytes()


def test_a_gate_that_only_warned_keeps_the_build_off_main(
    lake: LakeFS, lakefs_repo: str, lakectl_env: None, make_context: MakeContext
) -> None:
    ctx = _stage_context(make_context, lakefs_repo, gates_passed=False)
    main_before = lake.resolve(lakefs_repo, "main")
    publish_lakefs(ctx, ctx.paths.published_dir)

    ref = read_ref(ctx.root, "tiny")
    assert ref is not None and ref.status == AWAITING_REVIEW
    assert lake.resolve(lakefs_repo, "main") == main_before


def test_wrong_key_fails_naming_the_environment_variables(
    lakefs_repo: str,
    lakectl_env: None,
    make_context: MakeContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", "not-the-secret")
    ctx = _stage_context(make_context, lakefs_repo)
    with pytest.raises(
        LakeFSAuthError,
        match=r"from \$LAKECTL_CREDENTIALS_ACCESS_KEY_ID and \$LAKECTL_CRED",
    ):
        publish_lakefs(ctx, ctx.paths.published_dir)
    assert not ref_path(ctx.root, "tiny").exists()
