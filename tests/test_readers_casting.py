"""Inferring column types from whole columns, and casting values without loss."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from datakiln.readers.casting import (
    arrow_kind,
    cast_column,
    resolve,
    text_kinds,
    value_kinds,
)


def inferred(*values: str | None) -> str:
    return resolve(text_kinds(pd.Series(values, dtype=object)))


@pytest.mark.parametrize(
    ("values", "type_name"),
    [
        (("1", "-2", None), "int64"),
        (("1", "9223372036854775807"), "int64"),
        (("1", "9223372036854775808"), "bigint"),
        (("1234567890123456789", "12345678901234567890"), "bigint"),
        (("1", "2.5"), "float64"),
        (("1e-5", ".5", "-0.25"), "float64"),
        (("9007199254740993", "0.5"), "string"),  # a float64 would round the first
        (("007", "8"), "string"),  # leading zeros are kept
        (("+1",), "string"),
        ((" 1",), "string"),
        (("true", "False"), "bool"),
        (("true", "1"), "string"),
        (("nan",), "string"),
        ((None, None), "string"),
        (("2015-03-03",), "string"),
    ],
)
def test_types_inferred_from_text(
    values: tuple[str | None, ...], type_name: str
) -> None:
    assert inferred(*values) == type_name


@pytest.mark.parametrize(
    ("values", "type_name"),
    [
        (["1", "2"], "string"),  # JSON strings stay strings
        ([1, None, 2], "int64"),
        ([1, 2.5], "float64"),
        ([1, 12345678901234567890], "bigint"),
        ([True, False], "bool"),
        ([{"a": 1}, None], "string"),
        ([datetime(2020, 1, 1)], "datetime"),
        ([Decimal("12345678901234567890123")], "bigint"),
        ([float("nan"), 1.5], "float64"),
    ],
)
def test_types_inferred_from_typed_values(values: list[object], type_name: str) -> None:
    assert resolve(value_kinds(values)) == type_name


@pytest.mark.parametrize(
    ("arrow_type", "type_name"),
    [
        (pa.int32(), "int64"),
        (pa.int64(), "int64"),
        (pa.uint64(), "bigint"),
        (pa.float32(), "float64"),
        (pa.large_string(), "string"),
        (pa.timestamp("ms"), "datetime"),
        (pa.decimal128(38, 0), "bigint"),
        (pa.decimal128(10, 2), "string"),
        (pa.list_(pa.int64()), "string"),
    ],
)
def test_types_of_parquet_columns(arrow_type: pa.DataType, type_name: str) -> None:
    kind = arrow_kind(arrow_type)

    assert resolve({kind} if kind else set()) == type_name


def cast(values: list[object], type_name: str) -> tuple[list[object], dict[int, str]]:
    series, errors = cast_column(pd.Series(values, dtype=object), type_name)
    return [None if pd.isna(v) else v for v in series.tolist()], errors


def test_bigint_keeps_every_digit_of_any_integer() -> None:
    values, errors = cast(
        [" 00123 ", "+5", 12345678901234567890, Decimal("7"), 2.0], "bigint"
    )

    assert values == ["00123", "5", "12345678901234567890", "7", "2"]
    assert errors == {}


def test_bigint_refuses_what_is_not_an_exact_integer() -> None:
    values, errors = cast(["1.5", 2.5, True, 1e300], "bigint")

    assert values == [None] * 4
    assert set(errors) == {0, 1, 2, 3}
    assert errors[0] == "'1.5' is not an integer"


def test_int64_refuses_values_beyond_its_range() -> None:
    values, errors = cast(["9223372036854775807", "9223372036854775808"], "int64")

    assert values[0] == 9223372036854775807
    assert errors == {
        1: "'9223372036854775808' is outside int64; declare the column bigint"
    }


def test_float64_refuses_integers_it_would_round() -> None:
    values, errors = cast([2**53, 2**53 + 1, "1e-5", "abc"], "float64")

    assert values[:3] == [float(2**53), None, 1e-5]
    assert set(errors) == {1, 3}
    assert "would lose digits" in errors[1]


def test_bool_reads_common_spellings() -> None:
    values, errors = cast(["yes", "N", 1, "0", False, "maybe"], "bool")

    assert values == [True, False, True, False, False, None]
    assert list(errors) == [5]


def test_datetime_takes_iso_8601_and_stores_utc() -> None:
    values, errors = cast(
        ["2015-03-03T09:30:00-05:00", "2015-03-03", datetime(2020, 1, 1), "3 March"],
        "datetime",
    )

    assert values[:3] == [
        pd.Timestamp("2015-03-03 14:30", tz=UTC),
        pd.Timestamp("2015-03-03", tz=UTC),
        pd.Timestamp("2020-01-01", tz=UTC),
    ]
    assert list(errors) == [3]


def test_string_writes_other_values_as_text() -> None:
    values, _ = cast([1, 2.5, True, {"a": [1, "é"]}], "string")

    assert values == ["1", "2.5", "true", '{"a": [1, "é"]}']
