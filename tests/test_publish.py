"""Publishing: Parquet per split, card and manifest, swapped in atomically."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from labelled_records import MakeContext, declaration, records, write_labelled
from omegaconf import OmegaConf

import datakiln
from datakiln import publish, split, validate
from datakiln.errors import ConfigError, LakeFSError
from datakiln.pii import PiiCounts
from datakiln.stage import StageContext


def publish_records(
    make_context: MakeContext, frame: pd.DataFrame, **sections: Any
) -> StageContext:
    """Validate, split and publish `frame`; return the publish stage's context."""
    declared = declaration(**sections)
    write_labelled(make_context("validate", declared), frame)
    validate.run(make_context("validate", declared))
    split.run(make_context("split", declared))
    ctx = make_context("publish", declared)
    publish.run(ctx)
    return ctx


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def siblings(ctx: StageContext) -> list[str]:
    return sorted(p.name for p in ctx.paths.published_dir.parent.iterdir())


def test_publishes_a_parquet_per_split_a_card_and_a_manifest(
    make_context: MakeContext,
) -> None:
    ctx = publish_records(make_context, records(200))

    folder = ctx.paths.published_dir
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == 200
    for name, entry in manifest["files"].items():
        assert entry["rows"] == pq.ParquetFile(folder / name).metadata.num_rows
        assert entry["sha256"] == validate.file_sha256(folder / name)
    assert siblings(ctx) == ["sample"]


def test_published_splits_hold_exactly_the_split_records(
    make_context: MakeContext,
) -> None:
    ctx = publish_records(make_context, records(120))

    folder = ctx.paths.published_dir
    split_table = pq.read_table(ctx.paths.table("split"))
    for name in ("train", "validation", "test"):
        published = pq.read_table(folder / f"{name}.parquet")
        wanted = split_table.filter(split_table["split"].to_numpy() == name)
        assert published.equals(wanted.drop_columns(["split"]))


def test_publishing_the_same_records_twice_gives_identical_bytes(
    make_context: MakeContext,
) -> None:
    ctx = publish_records(make_context, records(300))
    folder = ctx.paths.published_dir
    first = snapshot(folder)
    first_metrics = ctx.paths.metrics("publish").read_bytes()

    publish.run(make_context("publish", declaration()))

    second = snapshot(folder)
    for name in ("train.parquet", "validation.parquet", "test.parquet"):
        assert second[name] == first[name]
    assert second["manifest.json"] == first["manifest.json"]
    assert ctx.paths.metrics("publish").read_bytes() == first_metrics


def published_then_rebuilt(
    make_context: MakeContext,
) -> tuple[StageContext, dict[str, bytes]]:
    """A dataset published once, then built anew up to split; and the snapshot
    of the first published version."""
    ctx = publish_records(make_context, records(100))
    before = snapshot(ctx.paths.published_dir)
    write_labelled(ctx, records(150))
    validate.run(make_context("validate", declaration()))
    split.run(make_context("split", declaration()))
    return ctx, before


def test_failure_mid_publish_leaves_the_previous_version_byte_identical(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, before = published_then_rebuilt(make_context)

    def broken_card(facts: dict[str, Any]) -> str:
        staging = [p for p in siblings(ctx) if ".publish-" in p]
        assert staging, "the new splits are being written beside the old folder"
        raise RuntimeError("disk full")

    monkeypatch.setattr(publish, "render_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        publish.run(make_context("publish", declaration()))

    assert snapshot(ctx.paths.published_dir) == before
    assert siblings(ctx) == ["sample"]


def test_a_target_that_fails_leaves_the_previous_version_byte_identical(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, before = published_then_rebuilt(make_context)

    def server_gone(ctx: StageContext, folder: Path) -> None:
        assert (folder / "train.parquet").is_file(), "the target gets the new build"
        raise LakeFSError("lakeFS at http://127.0.0.1:1 is unavailable")

    monkeypatch.setattr(publish, "resolve_target", lambda name: server_gone)
    with pytest.raises(LakeFSError, match="unavailable"):
        publish.run(make_context("publish", declaration()))

    assert snapshot(ctx.paths.published_dir) == before
    assert siblings(ctx) == ["sample"]


def test_swap_falls_back_to_two_renames_where_exchange_is_unsupported(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = publish_records(make_context, records(100))

    def unsupported(a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "not supported")

    monkeypatch.setattr(publish, "exchange", unsupported)
    write_labelled(ctx, records(140))
    validate.run(make_context("validate", declaration()))
    split.run(make_context("split", declaration()))
    publish.run(make_context("publish", declaration()))

    manifest = json.loads((ctx.paths.published_dir / "manifest.json").read_text())
    assert manifest["rows"] == 140
    assert siblings(ctx) == ["sample"]


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")

    publish.exchange(tmp_path / "a", tmp_path / "b")

    assert (tmp_path / "a" / "x").read_text() == "b"
    assert (tmp_path / "b" / "x").read_text() == "a"


def test_recover_restores_a_folder_left_by_a_killed_swap(tmp_path: Path) -> None:
    final = tmp_path / "sample"
    old = tmp_path / ".sample.old-1234"
    old.mkdir()
    (old / "train.parquet").write_bytes(b"old data")
    (tmp_path / ".sample.publish-5678").mkdir()

    publish.recover(final)

    assert (final / "train.parquet").read_bytes() == b"old data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample"]


def test_card_tells_what_was_built_and_how(make_context: MakeContext) -> None:
    ctx = make_context("validate", declaration())
    ctx.paths.metrics("ingest").parent.mkdir(parents=True)
    ctx.paths.metrics("ingest").write_text(
        json.dumps({"rows_in": 130, "rows_out": 129, "rejects": {"bad_row": 1}})
    )
    ctx.paths.metrics("dedup").write_text(
        json.dumps({"rows_in": 129, "rows_out": 128, "exact": 1, "near": 0})
    )
    evaluation = {
        "gold": "stars",
        "holdout": 0.2,
        "rows": 25,
        "models": {"majority": {"accuracy": 0.92, "coverage": 0.8}},
    }
    ctx.paths.metrics("label").write_text(
        json.dumps(
            {
                "records": 128,
                "tasks": {
                    "mood": {
                        "model": "majority",
                        "records": 128,
                        "labelled": 128,
                        "evaluation": evaluation,
                    }
                },
            }
        )
    )

    ctx = publish_records(
        make_context,
        records(128),
        validate={"gates": {"min_rows": 100}},
        description="Reviews, labelled by mood.",
    )

    card = (ctx.paths.published_dir / "README.md").read_text()
    assert "# sample" in card
    assert "Reviews, labelled by mood." in card
    assert "License: CC0-1.0" in card
    assert "| reviews | `data/raw/sample/reviews.csv` |" in card
    assert "| ingest | 130 | 129 | 1 |" in card
    assert "| dedup | 129 | 128 | 1 |" in card
    assert "| validate | 128 | 128 | 0 |" in card
    out = pq.read_table(ctx.paths.table("split")).to_pandas()
    good = out[out["mood"] == "good"]["split"].value_counts()
    cells = " | ".join(f"{good.get(s, 0):,}" for s in ("train", "validation", "test"))
    assert f"| good | {cells} | {good.sum():,} |" in card
    train_rows = (out["split"] == "train").sum()
    assert f"| train.parquet | {train_rows:,} |" in card
    assert "Labelled by majority: 128 of 128 records." in card
    assert (
        "Accuracy against the gold column `stars` on 25 held-out records whose gold "
        "the functions and models never saw: majority 0.92 on the 80.0% it labels."
    ) in card
    assert "| rows.min | 128 | >= 100 | passed |" in card
    assert "| dup_group_leak | 0 | <= 0 | passed |" in card
    assert "split: seed 42, stratified by mood" in card
    assert "git commit: unknown (not built in a git checkout)" in card


def test_card_shows_the_params_and_their_hash(make_context: MakeContext) -> None:
    ctx = publish_records(make_context, records(50))

    card = (ctx.paths.published_dir / "README.md").read_text()
    params = OmegaConf.to_container(ctx.params.dataset["sample"])
    assert f"params sha256: `{publish.params_hash(params)}`" in card
    assert OmegaConf.to_yaml(ctx.params.dataset["sample"]) in card
    assert f"datakiln {datakiln.__version__}" in card


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_card_names_the_git_commit_and_a_dirty_tree(
    make_context: MakeContext, tmp_path: Path
) -> None:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "ci@example.invalid")
    git(tmp_path, "config", "user.name", "datakiln tests")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "old.json").write_text("{}\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "HEAD")

    ctx = publish_records(make_context, records(40))
    card = (ctx.paths.published_dir / "README.md").read_text()
    assert f"git commit: `{head}` (clean working tree)" in card

    (tmp_path / "code.py").write_text("x = 2\n")
    publish.run(make_context("publish", declaration()))
    card = (ctx.paths.published_dir / "README.md").read_text()
    assert f"git commit: `{head}`, with uncommitted changes to `code.py`" in card


def test_target_receives_the_finished_folder(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[list[str]] = []

    def spy(ctx: StageContext, folder: Path) -> None:
        # the finished build, still beside the published folder: it is swapped
        # in only once the target has succeeded
        assert folder.parent == ctx.paths.published_dir.parent
        assert folder.name.startswith(".sample.publish-")
        received.append(sorted(p.name for p in folder.iterdir()))

    monkeypatch.setitem(publish.TARGETS, "spy", "unused:unused")
    monkeypatch.setattr(publish, "resolve_target", lambda name: spy)

    publish_records(make_context, records(30), publish={"target": "spy"})

    assert received == [
        [
            "README.md",
            "manifest.json",
            "test.parquet",
            "train.parquet",
            "validation.parquet",
        ]
    ]


def test_unknown_target_names_the_dotted_key(make_context: MakeContext) -> None:
    ctx = make_context("publish", declaration(publish={"target": "s3"}))

    with pytest.raises(
        ConfigError,
        match=r"dataset\.sample\.publish\.target': unknown target 's3' \(known: local",
    ):
        publish.run(ctx)


def test_an_empty_split_is_published_as_an_empty_table(
    make_context: MakeContext,
) -> None:
    ctx = publish_records(
        make_context,
        records(20),
        split={"train": 0.5, "validation": 0.5, "test": 0.0, "stratify": "mood"},
    )

    test_file = pq.read_table(ctx.paths.published_dir / "test.parquet")
    train_file = pq.read_table(ctx.paths.published_dir / "train.parquet")
    assert test_file.num_rows == 0
    assert test_file.schema.equals(train_file.schema)


def test_card_says_which_personal_data_was_handled_and_how_often(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", declaration())
    counts = PiiCounts(
        actions={"email": "pseudonymise", "phone": "mask", "card": "drop"},
        matches={"email": 3, "phone": 2, "card": 1},
        records={"email": 3, "phone": 2, "card": 1},
        dropped={"card": 1},
        columns={"author_id": 4},
    )
    ctx.paths.metrics("clean").parent.mkdir(parents=True)
    ctx.paths.metrics("clean").write_text(
        json.dumps({"rows_in": 51, "rows_out": 50, "pii": counts.as_metrics()})
    )

    ctx = publish_records(make_context, records(50))

    card = (ctx.paths.published_dir / "README.md").read_text()
    assert "## Personal data" in card
    assert "| email | pseudonymise | 3 | 3 | – |" in card
    assert "| phone | mask | 2 | 2 | – |" in card
    assert "| card | drop | 1 | 1 | 1 |" in card
    assert "every value replaced by its pseudonym: `author_id` (4 values)." in card
    assert "with the key `${secret:pii.pseudonym_key}` kept in sops" in card


def test_card_says_when_no_personal_data_was_looked_for(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", declaration())
    ctx.paths.metrics("clean").parent.mkdir(parents=True)
    ctx.paths.metrics("clean").write_text(json.dumps({"rows_in": 5, "rows_out": 5}))

    ctx = publish_records(make_context, records(50))

    card = (ctx.paths.published_dir / "README.md").read_text()
    assert "No handling of personal data is declared (`clean.pii`)" in card


def test_the_card_calls_scores_without_a_holdout_agreement() -> None:
    task = {
        "model": "majority",
        "records": 40,
        "labelled": 40,
        "evaluation": {
            "gold": "stars",
            "holdout": 0.0,
            "rows": 40,
            "models": {"majority": {"accuracy": 1.0, "coverage": 1.0}},
        },
    }

    text = " ".join(publish._card_scores(task))

    assert "held-out" not in text
    assert "saw their gold, so this is agreement, not an estimate" in text
