"""The ingest stage end to end: declarations inline, input files made by each test."""

from __future__ import annotations

import codecs
import email.message
import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, MakeContext

from datakiln.config import DeriveConf
from datakiln.errors import ConfigError, GuardError, SchemaError, SourceError
from datakiln.ingest import cast_frame, content_keys, derive_columns, run
from datakiln.tables import read_table


def ingest(
    make_context: MakeContext, declaration: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run the stage; return its records, its rejects and its metrics."""
    ctx = make_context("ingest", declaration)
    run(ctx)
    metrics = json.loads(ctx.paths.metrics("ingest").read_text())
    return (
        read_table(ctx.paths.table("ingest")),
        read_table(ctx.paths.rejects("ingest")),
        metrics,
    )


def source(path: str, **options: Any) -> dict[str, Any]:
    return {"name": "src", "path": path, **options}


# ------------------------------------------------------------------- encodings


def test_utf8_bom_with_quoted_header_makes_id_the_first_column(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "bom.csv").write_bytes(
        codecs.BOM_UTF8 + b'"id","text"\r\n"1","caf\xc3\xa9"\r\n"2","na\xc3\xafve"\r\n'
    )

    records, _, _ = ingest(make_context, {"sources": [source("bom.csv")]})

    assert list(records.columns[1:3]) == ["id", "text"]
    assert records["id"].tolist() == [1, 2]
    assert records["text"].tolist() == ["café", "naïve"]


def test_utf16le_tab_separated_export_with_bom_is_read(
    tmp_path: Path, make_context: MakeContext
) -> None:
    text = "id\ttext\tscore\r\n7\tÅngström über\t0.5\r\n8\t日本語\t1.25\r\n"
    (tmp_path / "export.tsv").write_bytes(
        codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    )

    records, rejects, metrics = ingest(
        make_context, {"sources": [source("export.tsv")]}
    )

    assert records["id"].tolist() == [7, 8]
    assert records["text"].tolist() == ["Ångström über", "日本語"]
    assert records["score"].tolist() == [0.5, 1.25]
    assert rejects.empty
    assert metrics["sources"]["src"]["files_by_encoding"] == {"utf-16": 1}


def test_rows_with_bytes_the_encoding_cannot_decode_are_rejected(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "mixed.csv").write_bytes(
        b"id,text\n1,fine\n2,caf\xe9 in latin-1\n3,also fine\n"
    )

    records, rejects, _ = ingest(make_context, {"sources": [source("mixed.csv")]})

    assert records["id"].tolist() == [1, 3]
    assert rejects["reject_reason"].tolist() == ["bad_encoding"]
    assert rejects["text"].tolist() == ["caf\ufffd in latin-1"]
    assert rejects["source_row"].tolist() == [2]


# ------------------------------------------------------------------ large ids


BIG_IDS = [
    "1234567890123456789",  # 19 digits, fits int64
    "12345678901234567890",  # 20 digits, beyond int64
    "12345678901234567891",  # differs from the one above in the last digit
    "",
    "9007199254740993",  # 2**53 + 1: a float64 would round it
]


def _write_big_ids(path: Path) -> None:
    rows = "".join(f"{i},row {n}\n" for n, i in enumerate(BIG_IDS))
    path.write_text("id,text\n" + rows)


def test_large_integer_ids_survive_digit_for_digit_without_a_schema(
    tmp_path: Path, make_context: MakeContext
) -> None:
    _write_big_ids(tmp_path / "ids.csv")

    records, rejects, _ = ingest(make_context, {"sources": [source("ids.csv")]})

    assert rejects.empty
    assert len(records) == len(BIG_IDS)
    ids = records["id"].tolist()
    assert ids[:3] + ids[4:] == [i for i in BIG_IDS if i]
    assert pd.isna(ids[3])
    assert records["record_id"].nunique() == len(BIG_IDS)


def test_large_integer_ids_survive_when_declared_bigint(
    tmp_path: Path, make_context: MakeContext
) -> None:
    _write_big_ids(tmp_path / "ids.csv")
    declaration = {
        "sources": [source("ids.csv", id_column="id")],
        "schema": {"id": {"type": "bigint"}},
    }

    records, rejects, _ = ingest(make_context, declaration)

    assert rejects.empty
    assert records["id"].dropna().tolist() == [i for i in BIG_IDS if i]
    assert (
        str(
            pq.read_schema(make_context("ingest", declaration).paths.table("ingest"))
            .field("id")
            .type
        )
        == "string"
    )


def test_types_are_inferred_from_the_whole_column_not_the_first_batch(
    tmp_path: Path, make_context: MakeContext
) -> None:
    # Small ids fill the first batches; the 20-digit one comes last.
    ids = [str(n) for n in range(1, 8)] + ["98765432109876543210"]
    (tmp_path / "late.csv").write_text("id\n" + "\n".join(ids) + "\n")
    declaration = {"sources": [source("late.csv")], "ingest": {"batch_rows": 2}}

    records, _, _ = ingest(make_context, declaration)

    assert records["id"].tolist() == ids


def test_jsonl_ids_that_are_strings_stay_strings(
    tmp_path: Path, make_context: MakeContext
) -> None:
    lines = [
        {"id": "00042", "n": 1, "text": "leading zeros"},
        {"id": "12345678901234567890", "n": 2, "text": "twenty digits"},
        {"id": "7", "n": 12345678901234567890, "text": "a huge number"},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    records, _, _ = ingest(make_context, {"sources": [source("records.jsonl")]})

    assert records["id"].tolist() == ["00042", "12345678901234567890", "7"]
    # A JSON number too large for int64 keeps its digits too, as bigint.
    assert records["n"].tolist() == ["1", "2", "12345678901234567890"]


# --------------------------------------------------------------- parquet parts


def _write_disagreeing_parts(folder: Path) -> None:
    folder.mkdir()
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1, 2], pa.int64()),
                "score": pa.array([1, 9007199254740992], pa.int64()),
                "note": pa.array([None, None], pa.null()),
            }
        ),
        folder / "part-0.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "id": pa.array([3], pa.int64()),
                "score": pa.array([2.5], pa.float64()),
                "note": pa.array(["checked"], pa.string()),
                "extra": pa.array([True], pa.bool_()),
            }
        ),
        folder / "part-1.parquet",
    )


def test_parquet_parts_that_disagree_without_a_schema_name_each_file_and_column(
    tmp_path: Path, make_context: MakeContext
) -> None:
    _write_disagreeing_parts(tmp_path / "parts")

    with pytest.raises(SchemaError) as caught:
        ingest(make_context, {"sources": [source("parts/*.parquet")]})

    message = str(caught.value)
    assert (
        "column 'score': parts/part-0.parquet: int64; parts/part-1.parquet: double"
        in message
    )
    assert "column 'note': parts/part-0.parquet: null (every value empty); " in message
    assert (
        "column 'extra': parts/part-0.parquet: missing; parts/part-1.parquet: bool"
        in message
    )
    assert "column 'id'" not in message
    assert "schema:" in message


def test_parquet_parts_merge_without_loss_under_a_declared_schema(
    tmp_path: Path, make_context: MakeContext
) -> None:
    _write_disagreeing_parts(tmp_path / "parts")
    declaration = {
        "sources": [source("parts")],
        "schema": {
            "score": {"type": "float64"},
            "note": {"type": "string"},
            "extra": {"type": "bool"},
        },
    }

    records, rejects, _ = ingest(make_context, declaration)

    assert rejects.empty
    assert records["id"].tolist() == [1, 2, 3]
    assert records["score"].tolist() == [1.0, 9007199254740992.0, 2.5]
    assert records["note"].isna().tolist() == [True, True, False]
    assert records["extra"].isna().tolist() == [True, True, False]
    assert records["source_file"].tolist() == [
        "parts/part-0.parquet",
        "parts/part-0.parquet",
        "parts/part-1.parquet",
    ]


def test_an_integer_a_float_cannot_hold_is_rejected_not_rounded(
    tmp_path: Path, make_context: MakeContext
) -> None:
    pq.write_table(
        pa.table({"score": pa.array([3, 9007199254740993], pa.int64())}),
        tmp_path / "scores.parquet",
    )
    declaration = {
        "sources": [source("scores.parquet")],
        "schema": {"score": {"type": "float64"}},
    }

    records, rejects, _ = ingest(make_context, declaration)

    assert records["score"].tolist() == [3.0]
    assert rejects["reject_reason"].tolist() == ["type_mismatch"]
    assert rejects["score"].tolist() == ["9007199254740993"]
    assert "would lose digits" in rejects["reject_detail"].iloc[0]


# ------------------------------------------------------------ NULs and newlines


def test_csv_with_nul_bytes_and_cr_and_crlf_in_quoted_fields(
    tmp_path: Path, make_context: MakeContext
) -> None:
    data = (
        b"id,text\r\n"
        b'1,"first\x00 line\r\nsecond line"\r\n'
        b'2,"old mac\rline"\r\n'
        b"3,pla\x00in\x00\r\n"
        b'4,"both\r\nand\rhere"\r\n'
    )
    (tmp_path / "nul.csv").write_bytes(data)

    records, rejects, metrics = ingest(make_context, {"sources": [source("nul.csv")]})

    assert rejects.empty
    assert records["text"].tolist() == [
        "first line\r\nsecond line",
        "old mac\rline",
        "plain",
        "both\r\nand\rhere",
    ]
    assert metrics["nul_removed"] == 3
    assert metrics["sources"]["src"]["nul_removed"] == 3


# --------------------------------------------------------------------- rejects


def test_unreadable_rows_go_to_rejects_with_a_reason_and_nothing_vanishes(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text(
        "id,score,text\n1,0.5,ok\n2,0.7\n3,high,not a number\n4,0.1,ok,extra\n5,,ok\n"
    )
    (tmp_path / "b.jsonl").write_text(
        '{"id": 6, "score": 0.2, "text": "ok"}\n'
        '{"id": 7, "score": 0.3, "text": \n'
        "[1, 2]\n"
        "\n"
        '{"id": 8, "score": 0.4, "text": "ok"}\n'
    )
    declaration = {
        "sources": [source("a.csv"), {"name": "json", "path": "b.jsonl"}],
        "schema": {"score": {"type": "float64", "nullable": False}},
        "ingest": {"max_reject_share": 1.0},
    }

    records, rejects, metrics = ingest(make_context, declaration)

    assert records["id"].tolist() == [1, 6, 8]
    by_row = dict(
        zip(
            rejects["source_file"] + ":" + rejects["source_row"].astype(str),
            rejects["reject_reason"],
            strict=True,
        )
    )
    assert by_row == {
        "a.csv:2": "wrong_field_count",
        "a.csv:3": "type_mismatch",
        "a.csv:4": "wrong_field_count",
        "a.csv:5": "missing_value",
        "b.jsonl:2": "bad_json",
        "b.jsonl:3": "not_an_object",
    }
    assert metrics["rows_in"] == metrics["rows_out"] + metrics["rejects"] == 9
    assert metrics["rejects_by_reason"] == {
        "bad_json": 1,
        "missing_value": 1,
        "not_an_object": 1,
        "type_mismatch": 1,
        "wrong_field_count": 2,
    }
    assert metrics["sources"]["json"]["blank_lines"] == 1
    wrong = rejects[rejects["source_row"] == 4].iloc[0]
    assert wrong["raw"] == "4,0.1,ok,extra"
    assert "line 5: expected 3 fields, found 4" in wrong["reject_detail"]
    assert (rejects["reject_stage"] == "ingest").all()
    assert (
        "'high' is not a number"
        in rejects[rejects["source_row"] == 3]["reject_detail"].iloc[0]
    )


def test_a_repeated_declared_id_is_rejected_with_where_it_was_first_read(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("key,text\nk1,one\nk2,two\nk1,three\n")
    declaration = {"sources": [source("a.csv", id_column="key")]}

    records, rejects, _ = ingest(make_context, declaration)

    assert records["text"].tolist() == ["one", "two"]
    assert rejects["reject_reason"].tolist() == ["duplicate_id"]
    assert "read before, at a.csv row 1" in rejects["reject_detail"].iloc[0]


def test_a_source_mostly_rejected_stops_the_build_and_keeps_the_rejects(
    tmp_path: Path, make_context: MakeContext
) -> None:
    # Declared as CSV, written with semicolons: every row has the wrong count.
    (tmp_path / "semi.csv").write_text("id,text\n1;a;b\n2;c;d\n3,ok\n")
    ctx = make_context("ingest", {"sources": [source("semi.csv")]})

    with pytest.raises(
        GuardError, match=r"source 'src': 2 of 3 rows rejected.*wrong_field_count 2"
    ):
        run(ctx)

    assert not ctx.paths.table("ingest").exists()
    assert len(read_table(ctx.paths.rejects("ingest"))) == 2


# ---------------------------------------------------- declared in YAML alone


def _email(subject: str, sender: str, body: str) -> bytes:
    message = email.message.EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = "list@example.org"
    message["Date"] = "Tue, 03 Mar 2015 09:30:00 -0500"
    message.set_content(body)
    return bytes(message)


def test_a_folder_of_email_files_labelled_by_folder_name(
    tmp_path: Path, make_context: MakeContext
) -> None:
    for label, n in (("spam", 2), ("ham", 3)):
        folder = tmp_path / "mail" / label
        folder.mkdir(parents=True)
        for i in range(n):
            mail = _email(
                f"{label} {i}", f"a{i}@example.org", f"Body of {label} {i}.\n"
            )
            (folder / f"{i}.eml").write_bytes(mail)
    (tmp_path / "mail" / ".DS_Store").write_bytes(b"\x00\x01junk")
    declaration = {
        "sources": [
            {
                "name": "mail",
                "path": "mail",
                "format": "email",
                "folder_column": "label",
            }
        ],
        "schema": {"date": {"type": "datetime"}, "label": {"nullable": False}},
    }

    records, rejects, metrics = ingest(make_context, declaration)

    assert rejects.empty
    assert metrics["rows_out"] == 5
    assert sorted(records["label"]) == ["ham"] * 3 + ["spam"] * 2
    spam = records[records["subject"] == "spam 1"].iloc[0]
    assert spam["label"] == "spam"
    assert spam["from"] == "a1@example.org"
    assert spam["body"] == "Body of spam 1.\n"
    assert spam["date"] == pd.Timestamp("2015-03-03 14:30:00", tz="UTC")
    assert spam["source_file"] == "mail/spam/1.eml"


def test_a_zip_of_text_files_labelled_by_folder_name(
    tmp_path: Path, make_context: MakeContext
) -> None:
    with zipfile.ZipFile(tmp_path / "reviews.zip", "w") as archive:
        archive.writestr("reviews/pos/1.txt", "Loved it.\r\nWould watch again.")
        archive.writestr("reviews/neg/1.txt", "Dull.")
        archive.writestr("reviews/neg/2.txt", "")
        archive.writestr("__MACOSX/reviews/pos/._1.txt", "resource fork")
    declaration = {
        "sources": [source("reviews.zip", member="*.txt", folder_column="label")]
    }

    records, rejects, metrics = ingest(make_context, declaration)

    assert rejects.empty
    assert records[["label", "text"]].values.tolist() == [
        ["pos", "Loved it.\nWould watch again."],
        ["neg", "Dull."],
    ]
    assert metrics["sources"]["src"]["empty_records"] == 1
    assert records["source_file"].iloc[0] == "reviews.zip!reviews/pos/1.txt"


def test_a_csv_with_a_numeric_score_column(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "scored.csv").write_text(
        "text,score,votes\ngood,4.5,10\nbad,1,3\nfine,3.25e0,\n"
    )

    records, _, _ = ingest(make_context, {"sources": [source("scored.csv")]})

    assert records["score"].dtype == "Float64"
    assert records["score"].tolist() == [4.5, 1.0, 3.25]
    assert records["votes"].dtype == "Int64"
    assert records["votes"].tolist()[:2] == [10, 3]


def test_text_split_on_a_record_separator(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "notes.txt").write_text("first\n%%\nsecond\nline\n%%\n%%\nthird\n%%\n")
    declaration = {"sources": [source("notes.txt", record_separator="%%\n")]}

    records, _, metrics = ingest(make_context, declaration)

    assert records["text"].tolist() == ["first\n", "second\nline\n", "third\n"]
    assert records["source_row"].tolist() == [1, 2, 4]
    assert metrics["sources"]["src"]["empty_records"] == 1


def test_headerless_tsv_with_declared_columns_in_a_tar_gz(
    tmp_path: Path, make_context: MakeContext
) -> None:
    import io
    import tarfile

    data = b"a\t1\nb\t2\n"
    with tarfile.open(tmp_path / "export.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("export/data.tsv")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    declaration = {
        "sources": [source("export.tar.gz", format="tsv", columns=["word", "n"])]
    }

    records, _, _ = ingest(make_context, declaration)

    assert records[["word", "n"]].values.tolist() == [["a", 1], ["b", 2]]


# ---------------------------------------------------- provenance and record ids


def test_record_ids_are_stable_across_rebuilds_and_distinct_for_repeated_rows(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("text\nsame\nother\nsame\n")
    declaration = {"sources": [source("a.csv")]}

    first, _, _ = ingest(make_context, declaration)
    second, _, _ = ingest(make_context, declaration)

    assert first["record_id"].tolist() == second["record_id"].tolist()
    assert first["record_id"].nunique() == 3
    assert first[["source_name", "source_file", "source_row"]].values.tolist() == [
        ["src", "a.csv", 1],
        ["src", "a.csv", 2],
        ["src", "a.csv", 3],
    ]


def test_record_ids_follow_the_declared_id_not_the_position(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("key,text\nk1,one\nk2,two\n")
    declaration = {"sources": [source("a.csv", id_column="key")]}
    before, _, _ = ingest(make_context, declaration)

    (tmp_path / "a.csv").write_text("key,text\nk0,new\nk2,two edited\nk1,one\n")
    after, _, _ = ingest(make_context, declaration)

    ids_before = dict(zip(before["key"], before["record_id"], strict=True))
    ids_after = dict(zip(after["key"], after["record_id"], strict=True))
    assert ids_after["k1"] == ids_before["k1"]
    assert ids_after["k2"] == ids_before["k2"]
    assert ids_after["k0"] not in ids_before.values()


def test_derive_takes_the_first_group_of_a_pattern(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "tweets.csv").write_text(
        "source_id,text\nbbchealth-577117109701967872,a\nnprhealth-12,b\nbroken,c\n"
    )
    declaration = {
        "sources": [
            source(
                "tweets.csv",
                id_column="source_id",
                derive={
                    "outlet": {"column": "source_id", "pattern": "^([^-]+)-"},
                    "tweet_id": {"column": "source_id", "pattern": "-([0-9]+)$"},
                },
            )
        ],
        "schema": {"tweet_id": {"type": "bigint"}},
    }

    records, _, metrics = ingest(make_context, declaration)

    assert records["outlet"].fillna("-").tolist() == ["bbchealth", "nprhealth", "-"]
    assert records["tweet_id"].fillna("-").tolist() == ["577117109701967872", "12", "-"]
    assert metrics["sources"]["src"]["derive_unmatched"] == {"outlet": 1, "tweet_id": 1}


# ------------------------------------------------------------ declaration errors


def test_an_unpinned_lakefs_source_names_the_pin_command(
    make_context: MakeContext,
) -> None:
    # Reading lakeFS at pinned commits is tested in tests/test_lakefs_pin.py.
    ctx = make_context("ingest", {"sources": [source("lakefs://repo/main/data.csv")]})

    with pytest.raises(
        SourceError,
        match=r"source 'src' is declared as lakefs://repo/main/data.csv but the "
        r"lock file has no pin\. Run `datakiln lakefs pin sample`",
    ):
        run(ctx)


def test_a_misspelt_format_names_the_dotted_key(make_context: MakeContext) -> None:
    ctx = make_context("ingest", {"sources": [source("a.csv", format="cvs")]})

    with pytest.raises(
        ConfigError,
        match=r"'dataset.sample.sources\[0\].format': 'cvs' is not a format",
    ):
        run(ctx)


def test_an_unknown_schema_type_names_the_dotted_key(make_context: MakeContext) -> None:
    declaration = {"sources": [source("a.csv")], "schema": {"id": {"type": "integer"}}}
    ctx = make_context("ingest", declaration)

    with pytest.raises(
        ConfigError, match=r"'dataset.sample.schema.id.type': 'integer' is not a type"
    ):
        run(ctx)


def test_a_schema_column_no_source_has_is_an_error(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("id,text\n1,a\n")
    declaration = {"sources": [source("a.csv")], "schema": {"txet": {"type": "string"}}}

    with pytest.raises(
        SchemaError, match=r"declares column 'txet', which no source has"
    ):
        ingest(make_context, declaration)


def test_an_id_column_no_file_has_is_an_error(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("id,text\n1,a\n")
    declaration = {"sources": [source("a.csv", id_column="key")]}

    with pytest.raises(
        SourceError, match=r"`id_column` names column 'key', which no file"
    ):
        ingest(make_context, declaration)


def test_an_empty_file_is_named_as_the_cause_not_the_id_column(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_bytes(b"")
    declaration = {"sources": [source("a.csv", id_column="id")]}

    with pytest.raises(SourceError, match=r"source 'src': its files hold no column"):
        ingest(make_context, declaration)


def test_a_path_that_matches_nothing_says_what_to_do(make_context: MakeContext) -> None:
    ctx = make_context("ingest", {"sources": [source("data/raw/none/*.csv")]})

    with pytest.raises(
        SourceError, match=r"no files to read at 'data/raw/none/\*.csv'"
    ):
        run(ctx)


# ------------------------------------------------------------- pure transforms


def test_cast_frame_reports_the_first_problem_of_each_row() -> None:
    frame = pd.DataFrame({"n": ["1", "x", None], "t": ["a", None, None]}, dtype=object)

    cast, problems = cast_frame(frame, {"n": "int64", "t": "string"}, {"t"})

    assert cast["n"].tolist()[0] == 1
    assert problems[0] is None
    assert problems[1] == (
        "type_mismatch",
        "column 'n' is int64: 'x' is not an integer",
    )
    assert problems[2] == (
        "missing_value",
        "column 't' is declared not nullable but is empty",
    )


def test_derive_columns_counts_values_the_pattern_misses() -> None:
    frame = pd.DataFrame({"url": ["http://a.org/x", "mailto:b", None]}, dtype=object)

    derived, unmatched = derive_columns(
        frame, {"host": DeriveConf(column="url", pattern=r"//([^/]+)/")}
    )

    assert derived["host"].tolist() == ["a.org", None, None]
    assert unmatched == {"host": 1}


def test_content_keys_ignore_column_order() -> None:
    a = pd.DataFrame({"x": ["1"], "y": ["2"]}, dtype=object)
    b = pd.DataFrame({"y": ["2"], "x": ["1"]}, dtype=object)

    assert content_keys(a) == content_keys(b)


# ------------------------------------------------------------ the example data


@pytest.mark.parametrize(
    ("dataset", "rows"), [("health_tweets", 63_326), ("news_articles", 3_824)]
)
def test_the_example_datasets_read_in_full(
    dataset: str, rows: int, make_context: MakeContext
) -> None:
    from omegaconf import OmegaConf

    declared = OmegaConf.to_container(
        OmegaConf.load(REPO / "conf/dataset" / f"{dataset}.yaml")
    )
    assert isinstance(declared, dict)
    for src in declared["sources"]:
        archive = REPO / src["path"]
        if not archive.exists():
            pytest.skip(f"{archive} is missing; run `make data`")
        src["path"] = str(archive)
    ingest_part = {k: declared[k] for k in ("sources", "schema") if k in declared}

    records, rejects, metrics = ingest(make_context, ingest_part)

    assert metrics["rows_in"] == rows
    assert metrics["rows_out"] == len(records) == rows - len(rejects)
    assert records["record_id"].is_unique


def test_an_email_whose_body_cannot_be_decoded_is_rejected_with_its_headers(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "good.eml").write_bytes(_email("fine", "a@example.org", "ok"))
    (tmp_path / "mail" / "odd.eml").write_bytes(
        b"Subject: odd\r\nFrom: b@example.org\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nbody\r\n"
    )
    declaration = {
        "sources": [source("mail/*.eml")],
        "ingest": {"max_reject_share": 1.0},
    }

    records, rejects, _ = ingest(make_context, declaration)

    assert records["subject"].tolist() == ["fine"]
    assert rejects["reject_reason"].tolist() == ["bad_email"]
    assert rejects["subject"].tolist() == ["odd"]
    assert "x-no-such-charset" in rejects["reject_detail"].iloc[0]


def test_a_rename_onto_an_existing_column_is_an_error(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("body,text\nx,y\n")
    declaration = {"sources": [source("a.csv", rename={"body": "text"})]}

    with pytest.raises(SourceError, match=r"two columns named 'text' after `rename:`"):
        ingest(make_context, declaration)


def test_a_quote_never_closed_is_one_rejected_record_holding_the_rest(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text(
        'id,text\n1,ok\n2,"never closed\n3,lost?\n4,not lost\n'
    )
    declaration = {"sources": [source("a.csv")], "ingest": {"max_reject_share": 1.0}}

    records, rejects, metrics = ingest(make_context, declaration)

    assert records["id"].tolist() == [1]
    assert rejects["reject_reason"].tolist() == ["malformed_csv"]
    assert rejects["raw"].tolist() == ['2,"never closed\n3,lost?\n4,not lost']
    assert "line 3: unexpected end of data" in rejects["reject_detail"].iloc[0]
    assert metrics["rows_in"] == 2


def test_text_after_a_closing_quote_is_rejected_not_glued_on(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text(
        'id,text\n1,"quoted"tail\n2,fine\n3,"also ""fine"""\n'
    )
    declaration = {"sources": [source("a.csv")], "ingest": {"max_reject_share": 1.0}}

    records, rejects, _ = ingest(make_context, declaration)

    assert records["text"].tolist() == ["fine", 'also "fine"']
    assert rejects["raw"].tolist() == ['1,"quoted"tail']
    assert rejects["reject_reason"].tolist() == ["malformed_csv"]


def test_a_declared_legacy_encoding_is_honoured(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_bytes("id,text\n1,café crème\n".encode("cp1252"))
    declaration = {"sources": [source("a.csv", encoding="cp1252")]}

    records, rejects, _ = ingest(make_context, declaration)

    assert rejects.empty
    assert records["text"].tolist() == ["café crème"]


def test_a_csv_with_only_a_header_gives_an_empty_table_with_its_columns(
    tmp_path: Path, make_context: MakeContext
) -> None:
    (tmp_path / "a.csv").write_text("id,text\n")

    records, rejects, metrics = ingest(make_context, {"sources": [source("a.csv")]})

    assert records.empty and rejects.empty
    assert list(records.columns) == [
        "record_id",
        "id",
        "text",
        "source_name",
        "source_file",
        "source_row",
    ]
    assert metrics["rows_in"] == 0
