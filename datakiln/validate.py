"""The validate stage: schema checks and quality gates on the labelled records.

Every batch of `label.parquet` is checked against a pandera schema built from
the declaration (the dataset's `schema:`, `validate.columns`, the record columns
and one set of columns per label task) and counted. The gates declared under
`validate.gates` are then judged on the counts. The report
(`metrics/<dataset>/validate.json`) is written whatever the outcome, then a
failed check stops the build: `SchemaError` for data that does not fit the
schema, `GateError` for a gate. Split reads the report and refuses to run on a
failed or stale one.

The gate "no duplicate group split across train and test" needs the split, so
the split stage enforces it and reports it beside these gates (see
datakiln.split).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pdr
import pyarrow as pa
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors

from datakiln.config import ColumnConf, DatasetConf, GateConf, LabelTaskConf
from datakiln.errors import ConfigError, GateError, SchemaError
from datakiln.progress import progress
from datakiln.stage import StageContext
from datakiln.tables import read_arrow_batches

logger = logging.getLogger(__name__)

INPUT_STAGE = "label"
BATCH_ROWS = 50_000
# Examples kept per failed check; the counts are always complete.
MAX_EXAMPLES = 5
GATE_ACTIONS = ("fail", "warn", "ignore")

RECORD_COLUMNS = {
    "record_id": ColumnConf(type="string", nullable=False),
    "source_name": ColumnConf(type="string", nullable=False),
    "source_file": ColumnConf(type="string", nullable=False),
    "source_row": ColumnConf(type="int64", nullable=False),
}
# Declared type -> the Arrow type named when a column has another type.
CANONICAL_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us"),
    "bigint": pa.decimal128(38, 0),
}
DIGITS = r"^-?[0-9]+$"


# ---------------------------------------------------------------------- config


def check_conf(conf: DatasetConf, dataset: str, columns: list[str]) -> None:
    """Reject values the dataclass types cannot: unknown tasks, columns, types."""
    where = f"dataset.{dataset}"
    gates = conf.validate.gates
    tasks = {task.name for task in conf.label.tasks}
    declared = {**conf.schema, **conf.validate.columns}
    for name, column in declared.items():
        section = "validate.columns" if name in conf.validate.columns else "schema"
        if column.type not in CANONICAL_TYPES:
            raise _conf_error(
                dataset,
                f"{where}.{section}.{name}.type",
                f"unknown type '{column.type}'; use one of "
                f"{', '.join(CANONICAL_TYPES)}",
            )
    if gates.conflicting_labels not in GATE_ACTIONS:
        raise _conf_error(
            dataset,
            f"{where}.validate.gates.conflicting_labels",
            f"'{gates.conflicting_labels}' is not one of {', '.join(GATE_ACTIONS)}",
        )
    compares_texts = gates.conflicting_labels != "ignore" and conf.label.tasks
    if compares_texts and gates.text_column not in columns:
        raise _conf_error(
            dataset,
            f"{where}.validate.gates.text_column",
            f"no column '{gates.text_column}' in the labelled records "
            f"(columns: {', '.join(columns)})",
        )
    if gates.min_rows < 0 or (
        gates.max_rows is not None and gates.max_rows < gates.min_rows
    ):
        raise _conf_error(
            dataset,
            f"{where}.validate.gates",
            f"need 0 <= min_rows <= max_rows, found min_rows {gates.min_rows} and "
            f"max_rows {gates.max_rows}",
        )
    _check_shares(dataset, "max_null_share", gates.max_null_share, set(columns))
    _check_shares(dataset, "min_label_coverage", gates.min_label_coverage, tasks)
    _check_shares(dataset, "min_class_share", gates.min_class_share, tasks)


def _check_shares(
    dataset: str, gate: str, bounds: dict[str, float], known: set[str]
) -> None:
    what = "column" if gate == "max_null_share" else "label task"
    for name, bound in bounds.items():
        key = f"dataset.{dataset}.validate.gates.{gate}.{name}"
        if name not in known:
            shown = ", ".join(sorted(known)) or "none"
            raise _conf_error(dataset, key, f"no {what} '{name}' (known: {shown})")
        if not 0.0 <= bound <= 1.0:
            raise _conf_error(dataset, key, f"a share must be in [0, 1], found {bound}")


def _conf_error(dataset: str, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"conf/dataset/{dataset}.yaml: key '{key}': {problem}. Fix the declaration, "
        f"then run `datakiln compose`."
    )


# ---------------------------------------------------------------------- schema


def declared_columns(conf: DatasetConf) -> dict[str, ColumnConf]:
    """Every column the labelled records must have, with its declared type."""
    return {**RECORD_COLUMNS, **conf.schema, **conf.validate.columns}


def build_schema(conf: DatasetConf, found: pa.Schema) -> pdr.DataFrameSchema:
    """The pandera schema of the labelled records, read with Arrow-backed dtypes.

    A column whose stored type fits its declared type is checked with the stored
    type (so string and large_string both pass as `string`); one that does not
    is checked against the declared type, and pandera reports both.
    """
    columns: dict[str, pdr.Column] = {}
    for name, column in declared_columns(conf).items():
        columns[name] = _column(name, column, found)
    columns["dup_group"] = pdr.Column(
        _dtype("string", found, "dup_group"), nullable=True, required=False
    )
    for task in conf.label.tasks:
        columns.update(_task_columns(task, found))
    return pdr.DataFrameSchema(columns, strict=False, coerce=False)


def _column(name: str, column: ColumnConf, found: pa.Schema) -> pdr.Column:
    checks = []
    stored = found.field(name).type if name in found.names else None
    if column.type == "bigint" and stored is not None and _is_text(stored):
        checks.append(pdr.Check.str_matches(DIGITS))
    return pdr.Column(
        _dtype(column.type, found, name), checks=checks, nullable=column.nullable
    )


def _task_columns(task: LabelTaskConf, found: pa.Schema) -> dict[str, pdr.Column]:
    label_checks = [pdr.Check.isin(task.labels)] if task.labels else []
    return {
        task.name: pdr.Column(
            _dtype("string", found, task.name), checks=label_checks, nullable=True
        ),
        f"{task.name}_confidence": pdr.Column(
            _dtype("float64", found, f"{task.name}_confidence"),
            checks=[pdr.Check.in_range(0.0, 1.0)],
            nullable=True,
        ),
        # Votes are stored as the label stage chooses; only their presence counts.
        f"{task.name}_votes": pdr.Column(nullable=True),
    }


def _dtype(declared: str, found: pa.Schema, name: str) -> pd.ArrowDtype:
    stored = found.field(name).type if name in found.names else None
    if stored is not None and _fits(declared, stored):
        return pd.ArrowDtype(stored)
    return pd.ArrowDtype(CANONICAL_TYPES[declared])


def _fits(declared: str, stored: pa.DataType) -> bool:
    types = pa.types
    fits = {
        "string": _is_text,
        "int64": lambda t: types.is_signed_integer(t)
        or (types.is_unsigned_integer(t) and t.bit_width < 64),
        "float64": types.is_floating,
        "bool": types.is_boolean,
        "datetime": lambda t: types.is_timestamp(t) or types.is_date(t),
        # exact: integers, decimals without a fraction, or digits as text
        "bigint": lambda t: types.is_integer(t)
        or (types.is_decimal(t) and t.scale == 0)
        or _is_text(t),
    }
    return bool(fits[declared](stored))


def _is_text(stored: pa.DataType) -> bool:
    return bool(pa.types.is_string(stored) or pa.types.is_large_string(stored))


@dataclass
class SchemaFailure:
    """One check that failed: on a whole column (rows == 0) or on some rows."""

    column: str
    check: str
    rows: int = 0
    found: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        if not self.rows:
            return f"column '{self.column}': {self.check} (found {self.found})"
        shown = "; ".join(_describe_row(e) for e in self.examples[:2])
        return (
            f"column '{self.column}': {self.check} failed on {self.rows} rows, "
            f"e.g. {shown}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "check": self.check,
            "rows": self.rows,
            "found": self.found,
            "examples": self.examples,
        }


def _describe_row(example: dict[str, Any]) -> str:
    where = f"{example.get('source_file')} row {example.get('source_row')}"
    value = f" value {example['value']!r}" if "value" in example else ""
    return f"record_id {example.get('record_id')!r} ({where}){value}"


def check_batch(
    frame: pd.DataFrame, schema: pdr.DataFrameSchema
) -> list[SchemaFailure]:
    """Check one batch; each failure names its column, check and rows."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        return _failures(exc.failure_cases, frame)
    return []


def _failures(cases: pd.DataFrame, frame: pd.DataFrame) -> list[SchemaFailure]:
    failures = []
    cases = cases.assign(column=cases["column"].fillna(cases["failure_case"]))
    for (column, check), group in cases.groupby(["column", "check"], sort=True):
        rows = group[group["index"].notna()]
        if rows.empty:
            found = str(group["failure_case"].iloc[0])
            check_name = _column_check(str(check))
            failures.append(SchemaFailure(str(column), check_name, 0, found))
            continue
        examples = [
            _example(frame, int(index), value)
            for index, value in zip(
                rows["index"][:MAX_EXAMPLES],
                rows["failure_case"][:MAX_EXAMPLES],
                strict=True,
            )
        ]
        failures.append(SchemaFailure(str(column), str(check), len(rows), "", examples))
    return failures


def _column_check(check: str) -> str:
    if check == "column_in_dataframe":
        return "missing"
    if check.startswith("dtype("):
        declared = check.removeprefix("dtype(").removesuffix(")").strip("'")
        return f"expected type {declared}"
    return check


def _example(frame: pd.DataFrame, index: int, value: Any = None) -> dict[str, Any]:
    row = frame.loc[index]
    example = {
        name: _plain(row[name])
        for name in ("record_id", "source_file", "source_row")
        if name in frame.columns
    }
    if value is not None and not _is_missing(value):
        example["value"] = str(value)[:80]
    return example


def _plain(value: Any) -> Any:
    if _is_missing(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like values
        return False


def merge_failures(
    into: dict[tuple[str, str], SchemaFailure], new: list[SchemaFailure]
) -> None:
    """Fold one batch's failures into the running list, keeping a few examples."""
    for failure in new:
        key = (failure.column, failure.check)
        if key not in into:
            into[key] = failure
            continue
        seen = into[key]
        seen.rows += failure.rows
        room = MAX_EXAMPLES - len(seen.examples)
        seen.examples.extend(failure.examples[: max(room, 0)])


# ----------------------------------------------------------------------- stats


@dataclass
class Stats:
    """Counts of a stretch of records; stats of two stretches add up."""

    rows: int = 0
    nulls: Counter[str] = field(default_factory=Counter)
    labelled: Counter[str] = field(default_factory=Counter)
    classes: dict[str, Counter[str]] = field(default_factory=dict)
    # task -> distinct (text hash, label) pairs, for conflicting labels
    pairs: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    id_hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, other: Stats) -> None:
        self.rows += other.rows
        self.nulls.update(other.nulls)
        self.labelled.update(other.labelled)
        for task, counts in other.classes.items():
            self.classes.setdefault(task, Counter()).update(counts)
        for task, frames in other.pairs.items():
            self.pairs.setdefault(task, []).extend(frames)
        self.id_hashes.extend(other.id_hashes)


def batch_stats(
    frame: pd.DataFrame, tasks: list[LabelTaskConf], text_column: str | None
) -> Stats:
    """Count rows, nulls, labels and text/label pairs of one batch."""
    stats = Stats(rows=len(frame))
    stats.nulls.update({str(k): int(v) for k, v in frame.isna().sum().items()})
    if "record_id" in frame.columns:
        stats.id_hashes.append(_hashes(frame["record_id"]))
    for task in tasks:
        if task.name not in frame.columns:
            continue
        labels = frame[task.name].dropna().astype(str)
        stats.labelled[task.name] = len(labels)
        stats.classes[task.name] = Counter(labels.value_counts().to_dict())
        if text_column is not None and text_column in frame.columns:
            pairs = pd.DataFrame(
                {"text": _hashes(frame.loc[labels.index, text_column]), "label": labels}
            )
            stats.pairs[task.name] = [pairs.drop_duplicates()]
    return stats


def _hashes(column: pd.Series) -> np.ndarray:
    # Only compared within one run, so pandas' hash (not stable across
    # versions) is fine here; a 64-bit collision would only add a false report.
    return pd.util.hash_pandas_object(column, index=False).to_numpy()


def conflicting_texts(stats: Stats, task: str) -> np.ndarray:
    """Hashes of texts that carry more than one label of `task`."""
    frames = stats.pairs.get(task)
    if not frames:
        return np.array([], dtype=np.uint64)
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    labels_per_text = pairs.groupby("text")["label"].nunique()
    return labels_per_text[labels_per_text > 1].index.to_numpy(dtype=np.uint64)


def duplicate_ids(stats: Stats) -> np.ndarray:
    if not stats.id_hashes:
        return np.array([], dtype=np.uint64)
    values, counts = np.unique(np.concatenate(stats.id_hashes), return_counts=True)
    return values[counts > 1]


# ----------------------------------------------------------------------- gates


@dataclass
class Gate:
    """One quality gate judged: `value op bound` must hold."""

    name: str
    key: str
    value: float
    bound: float
    op: str
    action: str = "fail"
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.op == ">=":
            return self.value >= self.bound
        return self.value <= self.bound

    def describe(self) -> str:
        text = (
            f"gate {self.name}: value {_num(self.value)}, bound {self.op} "
            f"{_num(self.bound)} ({self.key})"
        )
        return f"{text}: {self.detail}" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "value": _round(self.value),
            "bound": self.bound,
            "op": self.op,
            "passed": self.passed,
            "action": self.action,
        }
        if self.detail:
            report["detail"] = self.detail
        return report


def _num(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _round(value: float) -> float:
    return value if float(value).is_integer() else round(value, 6)


def evaluate_gates(
    stats: Stats,
    gates: GateConf,
    tasks: list[LabelTaskConf],
    conflicts: dict[str, str] | None = None,
) -> list[Gate]:
    """Judge the declared gates on the counts of the whole table.

    `conflicts` maps a label task to a description of its conflicting texts;
    their number is taken from `stats`.
    """
    by_name = {task.name: task for task in tasks}
    judged = _row_gates(stats, gates) + _null_gates(stats, gates)
    judged += _coverage_gates(stats, gates)
    judged += [
        _class_gate(stats, by_name[name], bound)
        for name, bound in sorted(gates.min_class_share.items())
    ]
    if gates.conflicting_labels != "ignore":
        judged += [_conflict_gate(stats, gates, task, conflicts) for task in tasks]
    return judged


def _row_gates(stats: Stats, gates: GateConf) -> list[Gate]:
    key = "validate.gates"
    judged = [Gate("rows.min", f"{key}.min_rows", stats.rows, gates.min_rows, ">=")]
    if gates.max_rows is not None:
        judged.append(
            Gate("rows.max", f"{key}.max_rows", stats.rows, gates.max_rows, "<=")
        )
    return judged


def _null_gates(stats: Stats, gates: GateConf) -> list[Gate]:
    return [
        Gate(
            f"null_share.{column}",
            f"validate.gates.max_null_share.{column}",
            _share(stats.nulls[column], stats.rows),
            bound,
            "<=",
            detail=f"{stats.nulls[column]:,} of {stats.rows:,} rows are null",
        )
        for column, bound in sorted(gates.max_null_share.items())
    ]


def _coverage_gates(stats: Stats, gates: GateConf) -> list[Gate]:
    return [
        Gate(
            f"label_coverage.{task}",
            f"validate.gates.min_label_coverage.{task}",
            _share(stats.labelled[task], stats.rows),
            bound,
            ">=",
            detail=f"{stats.labelled[task]:,} of {stats.rows:,} rows have a label",
        )
        for task, bound in sorted(gates.min_label_coverage.items())
    ]


def _conflict_gate(
    stats: Stats,
    gates: GateConf,
    task: LabelTaskConf,
    conflicts: dict[str, str] | None,
) -> Gate:
    found = conflicting_texts(stats, task.name)
    detail = (conflicts or {}).get(
        task.name, f"no {gates.text_column} carries two labels"
    )
    return Gate(
        f"conflicting_labels.{task.name}",
        "validate.gates.conflicting_labels",
        len(found),
        0,
        "<=",
        action=gates.conflicting_labels,
        detail=detail,
    )


def _class_gate(stats: Stats, task: LabelTaskConf, bound: float) -> Gate:
    counts = Counter(stats.classes.get(task.name, Counter()))
    for label in task.labels:
        counts.setdefault(label, 0)
    labelled = sum(counts.values())
    if counts:
        rarest, count = min(counts.items(), key=lambda item: (item[1], item[0]))
        detail = f"rarest label '{rarest}': {count:,} of {labelled:,} labelled rows"
    else:
        count, detail = 0, "no labelled rows"
    return Gate(
        f"class_share.{task.name}",
        f"validate.gates.min_class_share.{task.name}",
        _share(count, labelled),
        bound,
        ">=",
        detail=detail,
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# ------------------------------------------------------------------------ run


def run(ctx: StageContext) -> None:
    path = ctx.paths.table(INPUT_STAGE)
    found = pq.read_schema(path)
    conf = ctx.conf
    check_conf(conf, ctx.dataset, list(found.names))
    schema = build_schema(conf, found)
    gates = conf.validate.gates
    text_column = gates.text_column if gates.conflicting_labels != "ignore" else None

    failures: dict[tuple[str, str], SchemaFailure] = {}
    stats = Stats()
    rows = pq.ParquetFile(path).metadata.num_rows
    batches = read_arrow_batches(path, BATCH_ROWS)
    total = max(1, math.ceil(rows / BATCH_ROWS))
    for batch in progress(batches, total, f"validate {ctx.dataset}", "batches"):
        frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
        merge_failures(failures, check_batch(frame, schema))
        stats.add(batch_stats(frame, conf.label.tasks, text_column))

    _add_duplicate_ids(path, stats, failures)
    conflicts = _describe_conflicts(path, stats, conf.label.tasks, text_column)
    judged = evaluate_gates(stats, gates, conf.label.tasks, conflicts)
    report = build_report(ctx, path, stats, list(failures.values()), judged)
    ctx.write_metrics(report)
    raise_on_failure(ctx, list(failures.values()), judged)
    logger.info(
        "validate@%s: %s rows; schema passed; %d of %d gates passed",
        ctx.dataset,
        f"{stats.rows:,}",
        sum(g.passed for g in judged),
        len(judged),
    )


def _add_duplicate_ids(
    path: Path, stats: Stats, failures: dict[tuple[str, str], SchemaFailure]
) -> None:
    duplicated = duplicate_ids(stats)
    if not len(duplicated):
        return
    rows = find_rows(path, "record_id", duplicated, ["source_file", "source_row"])
    examples = [_example(rows, int(i)) for i in rows.index[:MAX_EXAMPLES]]
    failures[("record_id", "unique")] = SchemaFailure(
        "record_id", "unique", len(rows), "", examples
    )


def _describe_conflicts(
    path: Path, stats: Stats, tasks: list[LabelTaskConf], text_column: str | None
) -> dict[str, str]:
    if text_column is None:
        return {}
    described = {}
    for task in tasks:
        texts = conflicting_texts(stats, task.name)
        if not len(texts):
            continue
        rows = find_rows(path, text_column, texts[:MAX_EXAMPLES], [task.name])
        rows = rows[rows[task.name].notna()]
        shown = []
        for text, group in rows.groupby(text_column, sort=False):
            labels = ", ".join(
                f"{label} ({record})"
                for label, record in zip(
                    group[task.name], group["record_id"], strict=True
                )
            )
            shown.append(f"{str(text)[:60]!r}: {labels}")
        described[task.name] = (
            f"{len(texts):,} texts carry different labels, e.g. " + "; ".join(shown[:3])
        )
    return described


def find_rows(
    path: Path, column: str, hashes: np.ndarray, extra: list[str]
) -> pd.DataFrame:
    """The rows whose `column` hashes to one of `hashes` (a second, narrow pass)."""
    wanted = list(dict.fromkeys(["record_id", column, *extra]))
    found = []
    for batch in read_arrow_batches(path, BATCH_ROWS, columns=wanted):
        frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
        found.append(frame[np.isin(_hashes(frame[column]), hashes)])
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame()


def build_report(
    ctx: StageContext,
    path: Path,
    stats: Stats,
    failures: list[SchemaFailure],
    judged: list[Gate],
) -> dict[str, Any]:
    schema_passed = not failures
    gates_passed = all(g.passed or g.action != "fail" for g in judged)
    return {
        "input": {
            "path": path.relative_to(ctx.root).as_posix(),
            "rows": stats.rows,
            "sha256": file_sha256(path),
        },
        "passed": schema_passed and gates_passed,
        "rows": stats.rows,
        "schema": {
            "passed": schema_passed,
            "failures": [f.to_json() for f in failures],
        },
        "gates": {g.name: g.to_json() for g in judged},
        "null_share": {
            column: _round(_share(stats.nulls[column], stats.rows))
            for column in sorted(stats.nulls)
        },
        "label_coverage": {
            task.name: _round(_share(stats.labelled[task.name], stats.rows))
            for task in ctx.conf.label.tasks
        },
    }


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def raise_on_failure(
    ctx: StageContext, failures: list[SchemaFailure], judged: list[Gate]
) -> None:
    for gate in judged:
        if not gate.passed and gate.action == "warn":
            logger.warning("validate@%s: %s", ctx.dataset, gate.describe())
    failed = [g for g in judged if not g.passed and g.action == "fail"]
    report = ctx.paths.metrics(ctx.stage).relative_to(ctx.root).as_posix()
    table = ctx.paths.table(INPUT_STAGE).relative_to(ctx.root).as_posix()
    fix = (
        f"The full report is in {report}. Fix the data upstream, or the declaration "
        f"in conf/dataset/{ctx.dataset}.yaml, then `dvc repro validate@{ctx.dataset}`."
    )
    gate_text = "; ".join(g.describe() for g in failed)
    if failures:
        also = f" Also {_count(failed, 'gate')} failed: {gate_text}." if failed else ""
        raise SchemaError(
            f"{table}: {_count(failures, 'schema check')} failed: "
            + "; ".join(f.describe() for f in failures)
            + f".{also} {fix}"
        )
    if failed:
        raise GateError(f"{_count(failed, 'quality gate')} failed: {gate_text}. {fix}")


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
