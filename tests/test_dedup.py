"""Dedup: exact and near duplicates, duplicate groups, the guard, the stage."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MakeContext

from datakiln import dedup
from datakiln.config import DedupConf
from datakiln.dedup import Deduplicator, comparison_key, decide, dedup_frame
from datakiln.errors import ConfigError, GuardError, SchemaError
from datakiln.stage import StageContext

WORDS = [f"w{i}" for i in range(200)]


def records(texts: list[str | None], sources: list[str] | None = None) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "source_name": sources or ["news"] * n,
            "source_file": ["news.csv"] * n,
            "source_row": list(range(1, n + 1)),
            "text": texts,
        }
    )


def words(start: int, stop: int) -> str:
    return " ".join(WORDS[start:stop])


def outcome(rejects: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """record id -> (reason, duplicate_of) of every removed record."""
    return {
        row.record_id: (row.reject_reason, row.duplicate_of)
        for row in rejects.itertuples()
    }


# ------------------------------------------------------------------ exact


def test_the_same_word_in_nfc_and_nfd_is_an_exact_duplicate() -> None:
    word = "Café crème brûlée"
    nfc = unicodedata.normalize("NFC", word)
    nfd = unicodedata.normalize("NFD", word)
    assert nfc != nfd

    kept, rejects = dedup_frame(records([nfc, nfd]), DedupConf())

    assert kept["record_id"].tolist() == ["r0"]
    assert outcome(rejects) == {"r1": ("exact_duplicate", "r0")}
    assert rejects["similarity"].tolist() == [1.0]


def test_angstrom_sign_and_a_with_ring_are_exact_duplicates() -> None:
    sign, letter = "\u212b", "\u00c5"

    kept, rejects = dedup_frame(
        records([f"{letter}ngström unit", f"{sign}ngstro\u0308m unit"]), DedupConf()
    )

    assert kept["record_id"].tolist() == ["r0"]
    assert outcome(rejects) == {"r1": ("exact_duplicate", "r0")}


def test_case_and_whitespace_do_not_make_texts_different() -> None:
    assert comparison_key("  Flu\tSEASON\u00a0starts ") == comparison_key(
        "flu season starts"
    )
    assert comparison_key("Straße") == comparison_key("STRASSE")


def test_texts_that_differ_are_kept() -> None:
    kept, rejects = dedup_frame(
        records([words(0, 30), words(40, 70), "short one", "short two"]), DedupConf()
    )

    assert len(kept) == 4 and rejects.empty


def test_null_texts_are_never_duplicates() -> None:
    kept, rejects = dedup_frame(records([None, None, "x"]), DedupConf())

    assert kept["record_id"].tolist() == ["r0", "r1", "r2"] and rejects.empty


def test_exact_only_leaves_near_duplicates() -> None:
    texts = [words(0, 40), words(0, 39) + " extra", words(0, 40)]

    kept, rejects = dedup_frame(records(texts), DedupConf(near=False))

    assert kept["record_id"].tolist() == ["r0", "r1"]
    assert outcome(rejects) == {"r2": ("exact_duplicate", "r0")}


def test_texts_equal_but_for_an_ignored_token_are_exact_duplicates() -> None:
    texts = ["Flu season starts early <url>", "flu season starts early", "Flu <url>"]
    conf = DedupConf(exact_ignore=["<url>"], near=False)

    kept, rejects = dedup_frame(records(texts), conf)

    assert kept["record_id"].tolist() == ["r0", "r2"]
    assert outcome(rejects) == {"r1": ("exact_duplicate", "r0")}
    # the kept text is left as it was
    assert kept["text"].tolist() == ["Flu season starts early <url>", "Flu <url>"]


def test_an_ignored_pattern_keeps_the_words_either_side_apart() -> None:
    conf = DedupConf(exact_ignore=["<url>"], near=False)

    kept, rejects = dedup_frame(records(["flu<url>season", "fluseason"]), conf)

    assert len(kept) == 2 and rejects.empty


# ------------------------------------------------------------------- near


def test_a_near_duplicate_names_the_kept_record_and_its_similarity() -> None:
    conf = DedupConf(threshold=0.8, shingle=1, num_perm=256)
    texts = [words(0, 40), words(0, 38) + " new words", words(40, 80)]

    kept, rejects = dedup_frame(records(texts), conf)

    assert kept["record_id"].tolist() == ["r0", "r2"]
    assert outcome(rejects) == {"r1": ("near_duplicate", "r0")}
    # True Jaccard similarity of the word sets: 38 shared of 42.
    assert rejects["similarity"][0] == pytest.approx(38 / 42, abs=0.06)
    assert "near duplicate of r0" in rejects["reject_detail"][0]


def test_punctuation_alone_makes_a_near_duplicate() -> None:
    texts = ["Study: coffee may lower the risk of stroke <url>"]
    texts.append("Study - coffee may lower the risk of stroke! <url>")

    _, rejects = dedup_frame(records(texts), DedupConf())

    assert outcome(rejects) == {"r1": ("near_duplicate", "r0")}


def test_texts_without_words_are_only_ever_exact_duplicates() -> None:
    kept, rejects = dedup_frame(records(["🙂🙂", "🎉", "!!", "🙂🙂"]), DedupConf())

    assert kept["record_id"].tolist() == ["r0", "r1", "r2"]
    assert outcome(rejects) == {"r3": ("exact_duplicate", "r0")}


def test_a_copy_of_a_near_duplicate_points_to_the_kept_record() -> None:
    conf = DedupConf(threshold=0.8, shingle=1, num_perm=256)
    near = words(0, 38) + " new words"

    _, rejects = dedup_frame(records([words(0, 40), near, near.upper()]), conf)

    assert outcome(rejects) == {
        "r1": ("near_duplicate", "r0"),
        "r2": ("near_duplicate", "r0"),
    }
    assert rejects["similarity"][1] == rejects["similarity"][0]


# ----------------------------------------------------------- order and groups


def test_the_first_record_in_table_order_is_kept() -> None:
    frame = records(["Same text here", "Other text", "same TEXT here"])

    kept, _ = dedup_frame(frame, DedupConf())
    kept_reversed, _ = dedup_frame(frame.iloc[::-1], DedupConf())

    assert kept["record_id"].tolist() == ["r0", "r1"]
    assert kept_reversed["record_id"].tolist() == ["r2", "r1"]


def test_the_same_input_keeps_the_same_records() -> None:
    texts = [words(i, i + 30) for i in range(0, 40, 2)] * 2
    conf = DedupConf(threshold=0.7)

    first = dedup_frame(records(texts), conf)
    second = dedup_frame(records(texts), conf)

    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])


def test_a_record_joined_through_a_removed_one_shares_its_group() -> None:
    # b resembles a and is removed; c resembles b but not a, so c is kept, in
    # a's group: split must not put a and c on different sides.
    conf = DedupConf(threshold=0.72, shingle=1, num_perm=512)
    a, b, c = words(0, 90), words(10, 100), words(20, 110)
    # Jaccard similarity of a and b, and of b and c, is 0.8; of a and c, 0.64.
    lone = words(150, 200)

    kept, rejects = dedup_frame(records([a, b, c, lone]), conf)

    groups = kept.set_index("record_id")["dup_group"].to_dict()
    assert groups == {"r0": "r0", "r2": "r0", "r3": "r3"}
    assert outcome(rejects) == {"r1": ("near_duplicate", "r0")}
    assert rejects["dup_group"].tolist() == ["r0"]


def test_batches_decided_in_a_worker_process_decide_the_same() -> None:
    texts = [words(i % 50, i % 50 + 25) for i in range(300)]
    table = pa.Table.from_pandas(records(texts), preserve_index=False)
    conf = DedupConf(threshold=0.7)
    alone, shared = Deduplicator(conf), Deduplicator(conf)

    decide(alone, table.to_batches(max_chunksize=40))
    decide(shared, table.to_batches(max_chunksize=40), workers=2, chunk_rows=15)

    one, two = alone.decisions(), shared.decisions()
    assert (one.status != dedup.KEPT).sum() > 200
    assert one.status.tolist() == two.status.tolist()
    assert one.match.tolist() == two.match.tolist()
    assert one.group.tolist() == two.group.tolist()


# ---------------------------------------------------------------------- run


def write_clean(ctx: StageContext, frame: pd.DataFrame) -> None:
    path = ctx.paths.table("clean")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def test_run_writes_records_rejects_and_metrics_per_source(
    make_context: MakeContext,
) -> None:
    ctx = make_context("dedup", {"dedup": {"threshold": 0.8, "shingle": 1}})
    texts = [words(0, 40), words(0, 40).upper(), words(0, 39) + " new", "solo"]
    frame = records(texts + ["solo", "other"], ["a"] * 4 + ["b"] * 2)
    frame["tweet_id"] = pa.array([2**64 - 1, 1, 2, 3, 4, 5], pa.uint64()).to_pylist()
    write_clean(ctx, frame)

    dedup.run(ctx)

    kept = pq.read_table(ctx.paths.table("dedup"))
    rejects = pq.read_table(ctx.paths.rejects("dedup")).to_pandas()
    metrics = json.loads(ctx.paths.metrics("dedup").read_text())
    assert kept.column("record_id").to_pylist() == ["r0", "r3", "r5"]
    assert kept.column("dup_group").to_pylist() == ["r0", "r3", "r5"]
    assert kept.schema.field("tweet_id").type == pa.uint64()
    assert kept.column("tweet_id").to_pylist()[0] == 2**64 - 1
    assert outcome(rejects) == {
        "r1": ("exact_duplicate", "r0"),
        "r2": ("near_duplicate", "r0"),
        "r4": ("exact_duplicate", "r3"),
    }
    assert set(rejects["reject_stage"]) == {"dedup"}
    assert metrics["rows_in"] == 6 and metrics["rows_out"] == 3
    assert metrics["exact"] == 2 and metrics["near"] == 1
    assert metrics["sources"]["a"] == {
        "rows_in": 4,
        "exact": 1,
        "near": 1,
        "rows_out": 2,
        "removed_share": 0.5,
    }
    assert metrics["sources"]["b"]["exact"] == 1


def test_guard_stops_before_writing_when_a_source_would_lose_too_much(
    make_context: MakeContext,
) -> None:
    ctx = make_context("dedup", {"dedup": {"max_removed_share": 0.5}})
    texts = ["same", "same", "Same", "SAME", "one", "two"]
    write_clean(ctx, records(texts, ["spam"] * 4 + ["fine"] * 2))

    with pytest.raises(
        GuardError,
        match=r"max_removed_share = 50\.0%.*source 'spam': 75\.0% \(3 of 4 records",
    ):
        dedup.run(ctx)

    assert not ctx.paths.table("dedup").exists()
    assert not ctx.paths.rejects("dedup").exists()
    assert not ctx.paths.metrics("dedup").exists()
    assert not list(ctx.paths.interim_dir.glob(".dedup*"))


def test_guard_passes_at_the_bound() -> None:
    counts = {"a": {"rows_in": 4, "exact": 2, "near": 0, "rows_out": 2}}

    dedup.check_guard(counts, DedupConf(max_removed_share=0.5), "sample")


def test_run_names_a_missing_column_and_the_key(make_context: MakeContext) -> None:
    ctx = make_context("dedup", {"dedup": {"column": "body"}})
    write_clean(ctx, records(["x"]))

    with pytest.raises(SchemaError, match=r"no column 'body'.*dedup\.column"):
        dedup.run(ctx)


@pytest.mark.parametrize(
    ("key", "value"),
    [("threshold", 0.0), ("threshold", 1.5), ("num_perm", 1), ("shingle", 0)],
)
def test_impossible_settings_are_refused_with_the_key(key: str, value: Any) -> None:
    conf = DedupConf(**{key: value})

    with pytest.raises(ConfigError, match=rf"dataset\.sample\.dedup\.{key}'"):
        dedup.check_conf(conf, "sample")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("(<url>", "is not a regular expression"), ("x*", "matches the empty text")],
)
def test_a_bad_exact_ignore_pattern_is_refused_with_its_index(
    pattern: str, problem: str
) -> None:
    conf = DedupConf(exact_ignore=["<url>", pattern])

    with pytest.raises(
        ConfigError, match=rf"dataset\.sample\.dedup\.exact_ignore\[1\]'.*{problem}"
    ):
        dedup.check_conf(conf, "sample")
