"""Column types: inferring them from whole columns and casting values to them.

Types are inferred from every value of a column, never from a sample, so a
20-digit id in the last row still makes the column `bigint`. Inference is
strict (it never loses a digit or a leading zero); casting to a declared type
is lenient (it strips spaces, reads `+1`, `yes`, `1e3`) and turns each value it
cannot convert into an error for that row.

`bigint` holds exact integers of any size as their decimal digits in a string
column: ids are names, not quantities, and text keeps every digit through
Parquet, pandas, JSON and CSV alike, where a 128-bit decimal would become a
Python object in pandas and a float in JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
import pyarrow as pa

TYPES = ("string", "int64", "float64", "bool", "datetime", "bigint")
PANDAS_DTYPES = {
    "string": "string",
    "bigint": "string",
    "int64": "Int64",
    "float64": "Float64",
    "bool": "boolean",
    "datetime": "datetime64[ns, UTC]",
}
ARROW_TYPES = {
    "string": pa.string(),
    "bigint": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("ns", tz="UTC"),
}

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Integers up to this size survive a trip through a float64.
EXACT_FLOAT_INT = 2**53

# Kinds of value seen while inferring a column's type.
INT = "int"  # an integer a float64 holds exactly
WIDE_INT = "wide_int"  # an integer int64 holds, but not a float64
BIG_INT = "big_int"  # an integer beyond int64
FLOAT = "float"
BOOL = "bool"
DATETIME = "datetime"
TEXT = "text"
NESTED = "nested"
# Once a column has one of these, it is a string column whatever else it holds.
TERMINAL_KINDS = frozenset({TEXT, NESTED})

# Inference reads only canonical numbers: no sign, spaces or leading zeros, so
# "007" and "+1" stay text.
_INFER_INT = r"-?(?:0|[1-9][0-9]*)"
_EXPONENT = r"(?:[eE][+-]?[0-9]+)?"
_INFER_FLOAT = rf"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?{_EXPONENT}|-?\.[0-9]+{_EXPONENT}"
_INFER_BOOL = frozenset({"true", "false"})

_CAST_INT = re.compile(r"[+-]?[0-9]+")
_CAST_FLOAT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)",
    re.IGNORECASE,
)
_CAST_BOOL = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}


class CastError(ValueError):
    """A value that cannot be converted to a column's type without loss."""


# ------------------------------------------------------------------- inference


def text_kinds(values: pd.Series) -> set[str]:
    """Kinds of the non-null values of an untyped (CSV) column of strings."""
    text = values.dropna().astype(str)
    if text.empty:
        return set()
    kinds: set[str] = set()
    is_int = text.str.fullmatch(_INFER_INT)
    ints = text[is_int]
    if not ints.empty:
        # Fifteen digits or fewer always fit a float64; only longer ones are parsed.
        long = ints[ints.str.lstrip("-").str.len() > 15]
        if len(long) < len(ints):
            kinds.add(INT)
        kinds.update(_int_kind(int(v)) for v in long)
    rest = text[~is_int]
    is_float = rest.str.fullmatch(_INFER_FLOAT)
    if is_float.any():
        kinds.add(FLOAT)
    rest = rest[~is_float]
    is_bool = rest.str.lower().isin(_INFER_BOOL)
    if is_bool.any():
        kinds.add(BOOL)
    if not is_bool.all():
        kinds.add(TEXT)
    return kinds


def value_kinds(values: Iterable[object]) -> set[str]:
    """Kinds of typed values (JSON, Parquet, text): a JSON string stays text."""
    kinds: set[str] = set()
    for value in values:
        kind = _value_kind(value)
        if kind is not None:
            kinds.add(kind)
            if kind in TERMINAL_KINDS:
                break
    return kinds


def _value_kind(value: object) -> str | None:
    if is_null(value):
        return None
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return _int_kind(value)
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, Decimal):
        return BIG_INT if value == value.to_integral_value() else TEXT
    if isinstance(value, str):
        return TEXT
    if isinstance(value, date):
        return DATETIME
    return NESTED


def _int_kind(value: int) -> str:
    if abs(value) <= EXACT_FLOAT_INT:
        return INT
    if INT64_MIN <= value <= INT64_MAX:
        return WIDE_INT
    return BIG_INT


def arrow_kind(arrow_type: pa.DataType) -> str | None:
    """The kind every value of a Parquet column of this type has."""
    if pa.types.is_null(arrow_type):
        return None
    if pa.types.is_boolean(arrow_type):
        return BOOL
    if pa.types.is_integer(arrow_type):
        if arrow_type == pa.uint64():
            return BIG_INT
        return WIDE_INT if arrow_type == pa.int64() else INT
    if pa.types.is_floating(arrow_type):
        return FLOAT
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return DATETIME
    if pa.types.is_decimal(arrow_type):
        return BIG_INT if arrow_type.scale == 0 else TEXT
    return NESTED


def resolve(kinds: set[str]) -> str:
    """The narrowest type that holds every kind of value seen, exactly."""
    if not kinds:
        return "string"
    if kinds <= {INT, WIDE_INT}:
        return "int64"
    if kinds <= {INT, WIDE_INT, BIG_INT}:
        return "bigint"
    if kinds <= {INT, FLOAT}:
        return "float64"
    if kinds == {BOOL}:
        return "bool"
    if kinds == {DATETIME}:
        return "datetime"
    return "string"


# --------------------------------------------------------------------- casting


def is_null(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def cast_column(values: pd.Series, type_name: str) -> tuple[pd.Series, dict[int, str]]:
    """`values` converted to `type_name`, and an error per position that failed.

    A failed value becomes null in the result; the caller rejects its row.
    """
    if type_name == "string" and _all_text(values):
        return values.astype("string"), {}
    convert = CONVERTERS[type_name]
    out: list[object] = []
    errors: dict[int, str] = {}
    for position, value in enumerate(values.tolist()):
        if is_null(value):
            out.append(None)
            continue
        try:
            out.append(convert(value))
        except CastError as exc:
            out.append(None)
            errors[position] = str(exc)
    return pd.Series(out, index=values.index, dtype=PANDAS_DTYPES[type_name]), errors


def as_text(value: object) -> str | None:
    """Any value as text, for the rejects table, which keeps values unconverted."""
    if is_null(value):
        return None
    return to_string(value)


def as_texts(values: pd.Series) -> pd.Series:
    """`as_text` of every value, skipping the work when all are text already."""
    if _all_text(values):
        return values.astype(object).where(values.notna(), None)
    return values.map(as_text).astype(object)


def _all_text(values: pd.Series) -> bool:
    return pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")


def to_string(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise CastError(f"{_show(value)} is binary, not UTF-8 text") from None
    return json.dumps(value, ensure_ascii=False, default=str)


def to_int64(value: object) -> int:
    number = _integer(value, "int64")
    if not INT64_MIN <= number <= INT64_MAX:
        raise CastError(f"{_show(value)} is outside int64; declare the column bigint")
    return number


def to_bigint(value: object) -> str:
    if isinstance(value, str):
        text = value.strip()
        if not _CAST_INT.fullmatch(text):
            raise CastError(f"{_show(value)} is not an integer")
        return text.removeprefix("+")
    return str(_integer(value, "bigint"))


def to_float64(value: object) -> float:
    if isinstance(value, bool):
        raise CastError(f"{_show(value)} is a boolean, not a number")
    if isinstance(value, int):
        if abs(value) > EXACT_FLOAT_INT and int(float(value)) != value:
            raise CastError(
                f"{value} would lose digits as a float64; declare the column bigint"
            )
        return float(value)
    if isinstance(value, float | Decimal):
        return float(value)
    if isinstance(value, str) and _CAST_FLOAT.fullmatch(value.strip()):
        return float(value.strip())
    raise CastError(f"{_show(value)} is not a number")


def to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _CAST_BOOL:
        return _CAST_BOOL[value.strip().lower()]
    raise CastError(f"{_show(value)} is not a boolean (true/false, yes/no, 1/0)")


def to_datetime(value: object) -> pd.Timestamp:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CastError(f"{_show(value)} is not an ISO 8601 date or time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise CastError(f"{_show(value)} is not a date or time")
    # A time without a zone is taken as UTC.
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return pd.Timestamp(moment).tz_convert("UTC")
    except (ValueError, OverflowError) as exc:
        raise CastError(f"{_show(value)} is out of range ({exc})") from None


def _integer(value: object, type_name: str) -> int:
    if isinstance(value, bool):
        raise CastError(f"{_show(value)} is a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= EXACT_FLOAT_INT:
            return int(value)
        raise CastError(f"{_show(value)} is not an integer a float holds exactly")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and _CAST_INT.fullmatch(value.strip()):
        return int(value.strip())
    raise CastError(f"{_show(value)} is not an integer")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


CONVERTERS: dict[str, Callable[[object], object]] = {
    "string": to_string,
    "bigint": to_bigint,
    "int64": to_int64,
    "float64": to_float64,
    "bool": to_bool,
    "datetime": to_datetime,
}
