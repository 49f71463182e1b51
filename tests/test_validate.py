"""Schema checks and quality gates of the validate stage."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from labelled_records import MakeContext, declaration, records, write_labelled

from datakiln import stage, validate
from datakiln.config import GateConf
from datakiln.errors import ConfigError, GateError, SchemaError
from datakiln.stage import StageContext


def gates(**bounds: Any) -> dict[str, Any]:
    return {"gates": bounds}


def report(ctx: StageContext) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ctx.paths.metrics("validate").read_text())
    return result


def test_valid_records_pass_and_every_gate_is_reported(
    make_context: MakeContext,
) -> None:
    ctx = make_context(
        "validate",
        declaration(
            validate=gates(
                min_rows=10,
                max_rows=100,
                max_null_share={"text": 0.0},
                min_label_coverage={"mood": 0.9},
                min_class_share={"mood": 0.4},
            )
        ),
    )
    write_labelled(ctx, records(20))

    validate.run(ctx)

    result = report(ctx)
    assert result["passed"] is True
    assert result["schema"] == {"passed": True, "failures": []}
    assert result["gates"]["rows.min"] == {
        "value": 20,
        "bound": 10,
        "op": ">=",
        "passed": True,
        "action": "fail",
    }
    assert set(result["gates"]) == {
        "rows.min",
        "rows.max",
        "null_share.text",
        "label_coverage.mood",
        "class_share.mood",
        "conflicting_labels.mood",
    }
    assert result["gates"]["class_share.mood"]["value"] == 0.5
    assert result["input"]["rows"] == 20


def test_failing_gate_names_gate_value_and_bound_and_still_writes_report(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", declaration(validate=gates(min_rows=1000)))
    write_labelled(ctx, records(12))

    with pytest.raises(GateError, match=r"gate rows\.min: value 12, bound >= 1,000"):
        validate.run(ctx)

    result = report(ctx)
    assert result["passed"] is False
    assert result["gates"]["rows.min"]["passed"] is False
    assert result["gates"]["conflicting_labels.mood"]["passed"] is True


def test_label_coverage_below_bound_fails(make_context: MakeContext) -> None:
    ctx = make_context(
        "validate", declaration(validate=gates(min_label_coverage={"mood": 0.9}))
    )
    write_labelled(ctx, records(10, ("good", "bad", None, "good", None)))

    with pytest.raises(
        GateError,
        match=r"label_coverage\.mood: value 0\.6, bound >= 0\.9 .*6 of 10 rows",
    ):
        validate.run(ctx)


def test_class_share_counts_a_declared_label_that_never_occurs(
    make_context: MakeContext,
) -> None:
    ctx = make_context(
        "validate", declaration(validate=gates(min_class_share={"mood": 0.1}))
    )
    write_labelled(ctx, records(10, ("good",)))

    with pytest.raises(GateError, match=r"class_share\.mood: value 0,.*'bad': 0 of 10"):
        validate.run(ctx)


def test_null_share_above_bound_fails(make_context: MakeContext) -> None:
    ctx = make_context(
        "validate", declaration(validate=gates(max_null_share={"score": 0.1}))
    )
    frame = records(10)
    frame.loc[[1, 4, 7], "score"] = None
    write_labelled(ctx, frame)

    with pytest.raises(
        GateError, match=r"null_share\.score: value 0\.3, bound <= 0\.1"
    ):
        validate.run(ctx)


def _conflicting(n: int = 8) -> pd.DataFrame:
    frame = records(n)
    frame.loc[3, "text"] = frame.loc[2, "text"]  # r2 good, r3 bad: same text
    return frame


def test_same_text_with_different_labels_fails_when_declared_so(
    make_context: MakeContext,
) -> None:
    ctx = make_context(
        "validate", declaration(validate=gates(conflicting_labels="fail"))
    )
    write_labelled(ctx, _conflicting())

    with pytest.raises(
        GateError,
        match=r"conflicting_labels\.mood: value 1, bound <= 0 .*"
        r"'review number 2': good \(r2\), bad \(r3\)",
    ):
        validate.run(ctx)


def test_same_text_with_different_labels_warns_by_default(
    make_context: MakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_context("validate", declaration())
    write_labelled(ctx, _conflicting())

    with caplog.at_level(logging.WARNING, logger="datakiln.validate"):
        validate.run(ctx)

    gate = report(ctx)["gates"]["conflicting_labels.mood"]
    assert (gate["value"], gate["passed"], gate["action"]) == (1, False, "warn")
    assert report(ctx)["passed"] is True
    assert "conflicting_labels.mood: value 1" in caplog.text


def test_conflicting_labels_ignored_when_declared_so(
    make_context: MakeContext,
) -> None:
    ctx = make_context(
        "validate", declaration(validate=gates(conflicting_labels="ignore"))
    )
    write_labelled(ctx, _conflicting())

    validate.run(ctx)

    assert "conflicting_labels.mood" not in report(ctx)["gates"]


def test_null_in_non_nullable_column_names_column_and_row(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", declaration())
    frame = records(6)
    frame.loc[3, "text"] = None
    write_labelled(ctx, frame)

    with pytest.raises(
        SchemaError,
        match=r"column 'text': not_nullable failed on 1 rows, "
        r"e\.g\. record_id 'r3' \(reviews\.csv row 5\)",
    ):
        validate.run(ctx)

    failure = report(ctx)["schema"]["failures"][0]
    assert failure["examples"] == [
        {"record_id": "r3", "source_file": "reviews.csv", "source_row": 5}
    ]


def test_wrong_type_names_declared_and_stored_type(make_context: MakeContext) -> None:
    ctx = make_context("validate", declaration())
    frame = records(4)
    frame["score"] = frame["score"].astype(str)
    write_labelled(ctx, frame)

    with pytest.raises(
        SchemaError,
        match=r"column 'score': expected type double\[pyarrow\] \(found string",
    ):
        validate.run(ctx)


def test_missing_declared_column_is_named(make_context: MakeContext) -> None:
    decl = declaration()
    decl["validate"] = {"columns": {"language": {"type": "string"}}}
    ctx = make_context("validate", decl)
    write_labelled(ctx, records(4))

    with pytest.raises(SchemaError, match=r"column 'language': missing"):
        validate.run(ctx)


def test_label_outside_the_declared_labels_fails_the_schema(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", declaration())
    write_labelled(ctx, records(4, ("good", "meh")))

    with pytest.raises(
        SchemaError, match=r"column 'mood': isin.*on 2 rows.*value 'meh'"
    ):
        validate.run(ctx)


def test_record_id_repeated_in_another_batch_fails(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validate, "BATCH_ROWS", 3)
    ctx = make_context("validate", declaration())
    frame = records(9)
    frame.loc[7, "record_id"] = "r1"
    write_labelled(ctx, frame)

    with pytest.raises(
        SchemaError, match=r"column 'record_id': unique failed on 2 rows.*'r1'"
    ):
        validate.run(ctx)


def _with_bigint(ctx: StageContext, ids: pa.Array) -> None:
    table = pa.Table.from_pandas(records(len(ids)), preserve_index=False)
    table = table.append_column("tweet_id", ids)
    path = ctx.paths.table("label")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_bigint_stored_as_digits_or_decimal_passes(make_context: MakeContext) -> None:
    decl = declaration(schema={"tweet_id": {"type": "bigint", "nullable": False}})
    digits = pa.array(["12345678901234567890", "-98765432109876543210"])
    decimals = pa.array(
        [Decimal("12345678901234567890"), Decimal("1")], pa.decimal128(38, 0)
    )

    for ids in (digits, decimals):
        ctx = make_context("validate", decl)
        _with_bigint(ctx, ids)
        validate.run(ctx)
        assert report(ctx)["passed"] is True


def test_bigint_text_that_is_not_digits_fails(make_context: MakeContext) -> None:
    decl = declaration(schema={"tweet_id": {"type": "bigint", "nullable": False}})
    ctx = make_context("validate", decl)
    _with_bigint(ctx, pa.array(["12345678901234567890", "1.2e19"]))

    with pytest.raises(SchemaError, match=r"tweet_id': str_matches.*value '1\.2e19'"):
        validate.run(ctx)


def test_report_does_not_depend_on_batch_size(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    decl = declaration(
        validate=gates(min_label_coverage={"mood": 0.1}, min_class_share={"mood": 0.1})
    )
    frame = _conflicting(40)
    frame.loc[[5, 17, 33], "mood"] = None
    reports = []
    for rows in (7, 1000):
        monkeypatch.setattr(validate, "BATCH_ROWS", rows)
        ctx = make_context("validate", decl)
        write_labelled(ctx, frame)
        validate.run(ctx)
        reports.append(report(ctx))

    assert reports[0] == reports[1]
    assert reports[0]["gates"]["label_coverage.mood"]["value"] == 37 / 40


def test_batch_stats_add_up_to_the_stats_of_the_whole() -> None:
    frame = _conflicting(30).astype({"mood": "object"})
    task = declaration()["label"]["tasks"][0]
    tasks = [validate.LabelTaskConf(name=task["name"], labels=task["labels"])]
    whole = validate.batch_stats(frame, tasks, "text")
    parts = validate.Stats()
    for start in range(0, 30, 11):
        parts.add(validate.batch_stats(frame.iloc[start : start + 11], tasks, "text"))

    conf = GateConf(min_label_coverage={"mood": 0.5}, min_class_share={"mood": 0.5})
    judged_whole = validate.evaluate_gates(whole, conf, tasks)
    judged_parts = validate.evaluate_gates(parts, conf, tasks)
    assert [g.to_json() for g in judged_parts] == [g.to_json() for g in judged_whole]
    assert (parts.rows, parts.nulls, parts.classes) == (
        whole.rows,
        whole.nulls,
        whole.classes,
    )
    assert len(validate.conflicting_texts(parts, "mood")) == 1


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (
            {"min_label_coverage": {"topic": 0.5}},
            r"dataset\.sample\.validate\.gates\.min_label_coverage\.topic': "
            r"no label task 'topic' \(known: mood\)",
        ),
        (
            {"min_class_share": {"mood": 1.5}},
            r"min_class_share\.mood': a share must be in \[0, 1\], found 1\.5",
        ),
        (
            {"max_null_share": {"title": 0.1}},
            r"max_null_share\.title': no column 'title'",
        ),
        (
            {"conflicting_labels": "shout"},
            r"conflicting_labels': 'shout' is not one of fail, warn, ignore",
        ),
        ({"text_column": "body"}, r"text_column': no column 'body'"),
        ({"min_rows": 10, "max_rows": 5}, r"min_rows 10 and max_rows 5"),
    ],
)
def test_bad_gate_declaration_names_the_dotted_key(
    make_context: MakeContext, bounds: dict[str, Any], message: str
) -> None:
    ctx = make_context("validate", declaration(validate=gates(**bounds)))
    write_labelled(ctx, records(4))

    with pytest.raises(ConfigError, match=r"conf/dataset/sample\.yaml.*" + message):
        validate.run(ctx)


def test_unknown_column_type_names_the_dotted_key(make_context: MakeContext) -> None:
    ctx = make_context("validate", declaration(schema={"text": {"type": "varchar"}}))
    write_labelled(ctx, records(4))

    with pytest.raises(
        ConfigError, match=r"dataset\.sample\.schema\.text\.type': unknown type"
    ):
        validate.run(ctx)


def test_failed_gate_exits_non_zero_after_writing_the_report(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context("validate", declaration(validate=gates(min_rows=100)))
    write_labelled(ctx, records(5))
    monkeypatch.setattr(stage, "context", lambda *args, **kwargs: ctx)

    with pytest.raises(SystemExit) as exited:
        stage.main("validate", validate.run, ["sample"])

    assert exited.value.code == GateError.exit_code != 0
    assert report(ctx)["gates"]["rows.min"]["passed"] is False
