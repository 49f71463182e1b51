"""The ingest stage: every declared source of a dataset, read into one table.

`run` reads the sources twice. The first pass surveys them: the columns there
are and the kinds of value each holds, so that a column's type is inferred from
all of its values, never from the first batch. The second pass reads them again
batch by batch, casts each batch to the final types and writes it; rows that
cannot be read or cast go to the rejects table with a reason. Reading twice
keeps memory to one batch where keeping the whole source would not.

Every record gets provenance (`source_name`, `source_file`, `source_row`) and a
`record_id` that is the same on every rebuild: a hash of the source's name and
the record's declared id, or of its content and how often that content has
occurred before in the source.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from datakiln.config import ColumnConf, DatasetConf, DeriveConf, SourceConf
from datakiln.errors import ConfigError, GuardError, SchemaError, SourceError
from datakiln.progress import progress
from datakiln.readers import FORMATS, RawBatch, RawReject, ReadStats, read_source
from datakiln.readers.casting import (
    ARROW_TYPES,
    TERMINAL_KINDS,
    TYPES,
    arrow_kind,
    as_text,
    as_texts,
    cast_column,
    resolve,
    text_kinds,
    value_kinds,
)
from datakiln.stage import StageContext
from datakiln.tables import ParquetSink

logger = logging.getLogger(__name__)

STAGE = "ingest"
PROVENANCE = ("source_name", "source_file", "source_row")
RESERVED = frozenset({"record_id", *PROVENANCE})
REJECT_COLUMNS = ("raw", "reject_stage", "reject_reason", "reject_detail")


# ------------------------------------------------------------------ declaration


def check_declaration(conf: DatasetConf, dataset: str) -> None:
    """Refuse values the dataclasses cannot check, naming the dotted key."""
    where = f"conf/dataset/{dataset}.yaml"
    if not conf.sources:
        raise ConfigError(
            f"{where}: key 'dataset.{dataset}.sources' declares no source."
        )
    names = Counter(source.name for source in conf.sources)
    for i, source in enumerate(conf.sources):
        key = f"dataset.{dataset}.sources[{i}]"
        if names[source.name] > 1:
            raise ConfigError(
                f"{where}: key '{key}.name': '{source.name}' names two sources; "
                f"give each source its own name."
            )
        _check_source(source, key, where)
    for column, declared in conf.schema.items():
        if declared.type not in TYPES:
            raise ConfigError(
                f"{where}: key 'dataset.{dataset}.schema.{column}.type': "
                f"'{declared.type}' is not a type; use one of {', '.join(TYPES)}."
            )
    share = conf.ingest.max_reject_share
    if conf.ingest.batch_rows < 1 or not 0.0 <= share <= 1.0:
        raise ConfigError(
            f"{where}: key 'dataset.{dataset}.ingest': batch_rows must be at least "
            f"1 and max_reject_share between 0 and 1 (found {conf.ingest.batch_rows} "
            f"and {share})."
        )


def _check_source(source: SourceConf, key: str, where: str) -> None:
    if source.format not in FORMATS:
        raise ConfigError(
            f"{where}: key '{key}.format': '{source.format}' is not a format; use "
            f"one of {', '.join(FORMATS)}."
        )
    if source.encoding != "auto":
        try:
            codecs.lookup(source.encoding)
        except LookupError:
            raise ConfigError(
                f"{where}: key '{key}.encoding': no codec '{source.encoding}'; use "
                f"auto or a Python codec name such as utf-8, utf-16, cp1252."
            ) from None
    if source.delimiter is not None and len(source.delimiter) != 1:
        raise ConfigError(
            f"{where}: key '{key}.delimiter': {source.delimiter!r} must be one "
            f'character (write a tab as "\\t").'
        )
    for column, rule in source.derive.items():
        try:
            groups = re.compile(rule.pattern).groups
        except re.error as exc:
            raise ConfigError(
                f"{where}: key '{key}.derive.{column}.pattern': {exc}."
            ) from None
        if groups < 1:
            raise ConfigError(
                f"{where}: key '{key}.derive.{column}.pattern': "
                f"{rule.pattern!r} has no group; put the part to keep in (...)."
            )


# ------------------------------------------------------------- pure transforms


def raw_frame(batch: RawBatch, source: SourceConf, folder: str) -> pd.DataFrame:
    """A batch's values with the source's null markers and folder column applied."""
    frame = batch.frame.copy()
    if not batch.typed and source.null_values:
        nulls = set(source.null_values)
        for column in frame.columns:
            frame[column] = frame[column].where(~frame[column].isin(nulls), None)
    if source.folder_column:
        frame[source.folder_column] = pd.Series(
            [folder] * len(frame), index=frame.index, dtype=object
        )
    return frame


def content_keys(frame: pd.DataFrame) -> list[str]:
    """One canonical text per row of its column names and values, for hashing."""
    columns = sorted(frame.columns)
    head = json.dumps(columns, ensure_ascii=False)
    return [
        head + json.dumps([as_text(v) for v in row], ensure_ascii=False)
        for row in frame[columns].itertuples(index=False, name=None)
    ]


def shape_frame(
    frame: pd.DataFrame, source: SourceConf
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rename, derive and add constants; also count rows a derive did not match."""
    frame = frame.rename(columns=source.rename)
    frame, unmatched = derive_columns(frame, source.derive)
    for column, value in source.constants.items():
        frame[column] = pd.Series([value] * len(frame), index=frame.index, dtype=object)
    return frame, unmatched


def derive_columns(
    frame: pd.DataFrame, derive: dict[str, DeriveConf]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Add each derived column: the first group of its pattern in another column.

    A value the pattern does not match derives null; the count of those is
    returned per derived column.
    """
    frame = frame.copy()
    unmatched: dict[str, int] = {}
    for column, rule in derive.items():
        if rule.column in frame.columns:
            text = as_texts(frame[rule.column])
        else:
            text = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        pattern = re.compile(rule.pattern)
        derived = [_first_group(pattern, value) for value in text.tolist()]
        unmatched[column] = sum(
            d is None and t is not None for d, t in zip(derived, text, strict=True)
        )
        frame[column] = pd.Series(derived, index=frame.index, dtype=object)
    return frame, unmatched


def _first_group(pattern: re.Pattern[str], value: str | None) -> str | None:
    match = None if value is None else pattern.search(value)
    return None if match is None else match.group(1)


def cast_frame(
    frame: pd.DataFrame, types: dict[str, str], required: set[str]
) -> tuple[pd.DataFrame, list[tuple[str, str] | None]]:
    """Cast every column to its type; for each row, the first problem or None.

    Problems are (reason, detail): `type_mismatch` for a value its column's type
    cannot hold, `missing_value` for a null in a column declared not nullable.
    """
    problems: list[tuple[str, str] | None] = [None] * len(frame)
    columns: dict[str, pd.Series] = {}
    for column in frame.columns:
        cast, errors = cast_column(frame[column], types[column])
        columns[column] = cast
        for position, error in errors.items():
            if problems[position] is None:
                detail = f"column '{column}' is {types[column]}: {error}"
                problems[position] = ("type_mismatch", detail)
    for column in sorted(required & set(columns)):
        for position, missing in enumerate(columns[column].isna().tolist()):
            if missing and problems[position] is None:
                detail = f"column '{column}' is declared not nullable but is empty"
                problems[position] = ("missing_value", detail)
    return pd.DataFrame(columns, index=frame.index), problems


def conform(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with exactly `columns`, in order; absent ones are all null."""
    out = frame.reindex(columns=columns)
    for column in columns:
        if column not in frame.columns:
            out[column] = pd.Series([None] * len(out), index=out.index, dtype=object)
    return out


# ------------------------------------------------------------------ record ids


def stable_id(*parts: str) -> str:
    text = "\x1f".join(parts)
    return hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=10
    ).hexdigest()


class RecordIds:
    """Record ids for one source, stable across rebuilds of the same input.

    A record with a value in the declared id column is named by it; any other
    by its content and how many times that content occurred before it in the
    source, so that two identical rows get two ids and a rebuild the same two.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._occurrences: Counter[bytes] = Counter()
        self._first_seen: dict[str, str] = {}

    def from_id(self, value: str) -> str:
        return stable_id(self.source, "id", value)

    def from_content(self, key: str) -> str:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass")).digest()
        occurrence = self._occurrences[digest]
        self._occurrences[digest] += 1
        return stable_id(self.source, "content", key, str(occurrence))

    def first_seen(self, value: str, where: str) -> str | None:
        """Where `value` was first read, if before; else remember `where`."""
        earlier = self._first_seen.get(value)
        if earlier is None:
            self._first_seen[value] = where
        return earlier


# ---------------------------------------------------------------------- survey


@dataclass
class Survey:
    """What a first pass over the sources finds."""

    columns: dict[str, None] = field(default_factory=dict)
    kinds: dict[str, set[str]] = field(default_factory=dict)
    # source -> file -> column -> Parquet type of that column in that file
    parquet: dict[str, dict[str, dict[str, pa.DataType]]] = field(default_factory=dict)
    batches: Counter[str] = field(default_factory=Counter)


def survey_sources(conf: DatasetConf, root: Path) -> Survey:
    survey = Survey()
    for source in conf.sources:
        seen: set[str] = set()
        batches = read_source(source, root, conf.ingest.batch_rows, ReadStats())
        for file, batch in batches:
            survey.batches[source.name] += 1
            seen.update(batch.frame.columns)
            _check_columns(batch, source, file.name)
            frame, _ = shape_frame(raw_frame(batch, source, file.folder), source)
            survey.columns.update(dict.fromkeys(frame.columns))
            _observe(survey, frame, batch, source, set(conf.schema))
            if batch.arrow_types is not None:
                files = survey.parquet.setdefault(source.name, {})
                files[file.name] = {
                    source.rename.get(name, name): arrow_type
                    for name, arrow_type in batch.arrow_types.items()
                }
        _check_names(source, seen)
    return survey


def _check_columns(batch: RawBatch, source: SourceConf, file_name: str) -> None:
    """Refuse a batch whose columns, once renamed and added to, would clash."""
    names = [source.rename.get(n, n) for n in batch.frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(
            f"{file_name}: source '{source.name}' has two columns named "
            f"'{twice[0]}' after `rename:`. Rename one of them to another name."
        )
    added = [*source.derive, *source.constants]
    if source.folder_column:
        added.append(source.folder_column)
    clash = sorted(RESERVED & {*names, *added})
    if clash:
        raise SourceError(
            f"{file_name}: column {clash[0]!r} has the name of a column ingest "
            f"adds. In source '{source.name}', `rename:` it (for example "
            f"`{clash[0]}: original_{clash[0]}`) or choose another name."
        )
    for column in added:
        if column in names:
            raise SourceError(
                f"{file_name}: source '{source.name}' adds column '{column}' (by "
                f"derive, constants or folder_column) but the file has one of that "
                f"name already. Choose another name, or `rename:` the file's column."
            )


def _check_names(source: SourceConf, seen: set[str]) -> None:
    renamed = {source.rename.get(n, n) for n in seen} | set(source.derive)
    wanted = {f"rename.{n}": n for n in source.rename if n not in seen}
    if source.id_column and source.id_column not in renamed:
        wanted["id_column"] = source.id_column
    for column, rule in source.derive.items():
        if rule.column not in renamed:
            wanted[f"derive.{column}.column"] = rule.column
    if wanted and not seen:
        key, column = next(iter(wanted.items()))
        raise SourceError(
            f"source '{source.name}': its files hold no column at all (each is "
            f"empty or has no header; the warnings above name them), so `{key}` "
            f"finds no column '{column}'. Check the files that `path` and `member` "
            f"match in the dataset's declaration."
        )
    if wanted:
        key, column = next(iter(wanted.items()))
        raise SourceError(
            f"source '{source.name}': `{key}` names column '{column}', which no file "
            f"of the source has (columns read: {', '.join(sorted(seen)) or 'none'})."
        )


def _observe(
    survey: Survey,
    frame: pd.DataFrame,
    batch: RawBatch,
    source: SourceConf,
    declared: set[str],
) -> None:
    arrow_types = {
        source.rename.get(name, name): arrow_type
        for name, arrow_type in (batch.arrow_types or {}).items()
    }
    untyped = set(source.derive)
    if not batch.typed:
        untyped |= {source.rename.get(n, n) for n in batch.frame.columns}
    for column in frame.columns:
        kinds = survey.kinds.setdefault(column, set())
        if column in declared or kinds & TERMINAL_KINDS:
            continue
        if column in arrow_types:
            kind = arrow_kind(arrow_types[column])
            kinds.update([kind] if kind else [])
        elif column in untyped:
            kinds.update(text_kinds(frame[column]))
        else:
            kinds.update(value_kinds(frame[column].tolist()))


def column_types(
    survey: Survey, schema: dict[str, ColumnConf], dataset: str
) -> dict[str, str]:
    """The type of every column: declared, else inferred from all its values."""
    _check_parquet_parts(survey, schema, dataset)
    absent = sorted(set(schema) - set(survey.columns))
    if absent:
        raise SchemaError(
            f"conf/dataset/{dataset}.yaml: `schema:` declares column "
            f"'{absent[0]}', which no source has (columns read: "
            f"{', '.join(survey.columns)}). Fix the name or add `rename:` to a source."
        )
    return {
        column: schema[column].type
        if column in schema
        else resolve(survey.kinds[column])
        for column in survey.columns
    }


def _check_parquet_parts(
    survey: Survey, schema: dict[str, ColumnConf], dataset: str
) -> None:
    """Parquet files of one source must agree on every column not declared."""
    lines: list[str] = []
    for source, files in survey.parquet.items():
        columns = dict.fromkeys(c for types in files.values() for c in types)
        for column in columns:
            found = {name: types.get(column) for name, types in files.items()}
            if column in schema or len({str(t) for t in found.values()}) == 1:
                continue
            where = "; ".join(
                f"{name}: {_describe(arrow_type)}" for name, arrow_type in found.items()
            )
            lines.append(f"  source '{source}', column '{column}': {where}")
    if lines:
        raise SchemaError(
            "Parquet files of one source disagree on columns no `schema:` "
            "declares:\n" + "\n".join(lines) + f"\nDeclare each column's type under "
            f"`schema:` in conf/dataset/{dataset}.yaml (for example "
            f"`score: {{type: float64}}`) so the files merge without loss, then "
            f"run `datakiln compose`."
        )


def _describe(arrow_type: pa.DataType | None) -> str:
    if arrow_type is None:
        return "missing"
    if pa.types.is_null(arrow_type):
        return "null (every value empty)"
    return str(arrow_type)


# ----------------------------------------------------------------------- write


@dataclass
class SourceCounts:
    rows_in: int = 0
    rows_out: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    derive_unmatched: Counter[str] = field(default_factory=Counter)
    stats: ReadStats = field(default_factory=ReadStats)

    def as_metrics(self) -> dict[str, Any]:
        return {
            "files": self.stats.files,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejects": sum(self.rejects.values()),
            "rejects_by_reason": dict(sorted(self.rejects.items())),
            "nul_removed": self.stats.nul_removed,
            "blank_lines": self.stats.blank_lines,
            "empty_records": self.stats.empty_records,
            "files_by_encoding": dict(sorted(self.stats.encodings.items())),
            "derive_unmatched": dict(sorted(self.derive_unmatched.items())),
        }


@dataclass
class Writer:
    """Pass two: casts batches and sends records and rejects to their tables."""

    columns: list[str]
    types: dict[str, str]
    required: set[str]
    records: ParquetSink
    rejects: ParquetSink

    def write_source(
        self, source: SourceConf, root: Path, batch_rows: int, total: int
    ) -> SourceCounts:
        counts = SourceCounts()
        ids = RecordIds(source.name)
        batches = read_source(source, root, batch_rows, counts.stats)
        for file, batch in progress(batches, total, f"ingest {source.name}", "batches"):
            raw = raw_frame(batch, source, file.folder)
            frame, unmatched = shape_frame(raw, source)
            counts.derive_unmatched.update(unmatched)
            frame = conform(frame, self.columns)
            record_ids = self._record_ids(raw, frame, source, ids)
            typed, problems = cast_frame(frame, self.types, self.required)
            self._check_ids(frame, problems, source, ids, file.name, batch.rows)
            counts.rows_in += len(frame) + len(batch.rejects)
            good = [p is None for p in problems]
            out = typed[good].assign(
                record_id=[r for r, g in zip(record_ids, good, strict=True) if g]
            )
            self._write_records(out, source.name, file.name, batch.rows, good)
            counts.rows_out += len(out)
            rejected = self._rejects_of(
                frame, problems, record_ids, file.name, batch.rows
            )
            rejected += self._read_rejects(batch.rejects, source, ids)
            for reject in rejected:
                counts.rejects[reject["reject_reason"]] += 1
            self._write_rejects(rejected, source.name, file.name)
        return counts

    def _record_ids(
        self, raw: pd.DataFrame, frame: pd.DataFrame, source: SourceConf, ids: RecordIds
    ) -> list[str]:
        """Ids from the declared id column, else from the raw record's content."""
        values: list[str | None] = (
            as_texts(frame[source.id_column]).tolist()
            if source.id_column
            else [None] * len(frame)
        )
        need_content = [value is None for value in values]
        keys = iter(content_keys(raw[need_content]) if any(need_content) else [])
        return [
            ids.from_content(next(keys)) if value is None else ids.from_id(value)
            for value in values
        ]

    def _check_ids(
        self,
        frame: pd.DataFrame,
        problems: list[tuple[str, str] | None],
        source: SourceConf,
        ids: RecordIds,
        file_name: str,
        rows: list[int],
    ) -> None:
        if not source.id_column:
            return
        values = as_texts(frame[source.id_column]).tolist()
        for position, value in enumerate(values):
            if value is None or problems[position] is not None:
                continue
            earlier = ids.first_seen(value, f"{file_name} row {rows[position]}")
            if earlier is not None:
                detail = (
                    f"id '{value}' in column '{source.id_column}' was read before, "
                    f"at {earlier}"
                )
                problems[position] = ("duplicate_id", detail)

    def _write_records(
        self,
        out: pd.DataFrame,
        source_name: str,
        file_name: str,
        rows: list[int],
        good: list[bool],
    ) -> None:
        if out.empty:
            return
        out["source_name"] = pd.Series(source_name, index=out.index, dtype="string")
        out["source_file"] = pd.Series(file_name, index=out.index, dtype="string")
        kept = [row for row, g in zip(rows, good, strict=True) if g]
        out["source_row"] = pd.Series(kept, index=out.index, dtype="int64")
        out["record_id"] = out["record_id"].astype("string")
        self.records.write(out[["record_id", *self.columns, *PROVENANCE]])

    def _rejects_of(
        self,
        frame: pd.DataFrame,
        problems: list[tuple[str, str] | None],
        record_ids: list[str],
        file_name: str,
        rows: list[int],
    ) -> list[dict[str, Any]]:
        rejected = []
        for position, problem in enumerate(problems):
            if problem is None:
                continue
            reason, detail = problem
            values = {str(c): as_text(v) for c, v in frame.iloc[position].items()}
            rejected.append(
                {
                    **values,
                    "record_id": record_ids[position],
                    "source_row": rows[position],
                    "reject_reason": reason,
                    "reject_detail": f"{file_name} row {rows[position]}: {detail}",
                }
            )
        return rejected

    def _read_rejects(
        self, rejects: list[RawReject], source: SourceConf, ids: RecordIds
    ) -> list[dict[str, Any]]:
        rejected = []
        for reject in rejects:
            values = {source.rename.get(k, k): v for k, v in reject.values.items()}
            key = json.dumps([sorted(reject.values.items()), reject.raw])
            rejected.append(
                {
                    **values,
                    "record_id": ids.from_content(key),
                    "source_row": reject.row,
                    "raw": reject.raw,
                    "reject_reason": reject.reason,
                    "reject_detail": reject.detail,
                }
            )
        return rejected

    def _write_rejects(
        self, rejected: list[dict[str, Any]], source_name: str, file_name: str
    ) -> None:
        if not rejected:
            return
        frame = pd.DataFrame(rejected)
        frame["source_name"] = source_name
        frame["source_file"] = file_name
        frame["reject_stage"] = STAGE
        columns = reject_columns(self.columns)
        frame = frame.reindex(columns=columns)
        for column in columns:
            dtype = pd.Int64Dtype() if column == "source_row" else pd.StringDtype()
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), None).astype(dtype)
        self.rejects.write(frame)


def reject_columns(columns: list[str]) -> list[str]:
    return ["record_id", *columns, *PROVENANCE, *REJECT_COLUMNS]


def records_schema(columns: list[str], types: dict[str, str]) -> pa.Schema:
    fields = [pa.field("record_id", pa.string())]
    fields += [pa.field(c, ARROW_TYPES[types[c]]) for c in columns]
    fields += [
        pa.field("source_name", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
    ]
    return pa.schema(fields)


def rejects_schema(columns: list[str]) -> pa.Schema:
    return pa.schema(
        pa.field(c, pa.int64() if c == "source_row" else pa.string())
        for c in reject_columns(columns)
    )


# ------------------------------------------------------------------------- run


def run(ctx: StageContext) -> None:
    from datakiln.lakefs.pin import pinned_conf

    conf = ctx.conf
    check_declaration(conf, ctx.dataset)
    # lakefs:// sources are read at the commits pinned in the dataset's lock file.
    conf = pinned_conf(conf, ctx.root, ctx.dataset)
    survey = survey_sources(conf, ctx.root)
    types = column_types(survey, conf.schema, ctx.dataset)
    logger.info("columns: %s", ", ".join(f"{c} ({t})" for c, t in types.items()))
    columns = list(survey.columns)
    required = {c for c, declared in conf.schema.items() if not declared.nullable}
    records = ParquetSink(ctx.paths.table(STAGE), records_schema(columns, types))
    rejects = ParquetSink(ctx.paths.rejects(STAGE), rejects_schema(columns))
    writer = Writer(columns, types, required, records, rejects)
    counts: dict[str, SourceCounts] = {}
    try:
        for source in conf.sources:
            total = survey.batches[source.name]
            counts[source.name] = writer.write_source(
                source, ctx.root, conf.ingest.batch_rows, total
            )
            _log_source(source.name, counts[source.name])
    except BaseException:
        records.abort()
        rejects.abort()
        raise
    rejects.close()
    try:
        _guard(counts, conf.ingest.max_reject_share, ctx)
    except GuardError:
        records.abort()
        raise
    records.close()
    ctx.write_metrics(metrics(counts))


def _log_source(name: str, counts: SourceCounts) -> None:
    logger.info(
        "source %s: %d rows from %d files, %d kept, %d rejected %s",
        name,
        counts.rows_in,
        counts.stats.files,
        counts.rows_out,
        sum(counts.rejects.values()),
        dict(counts.rejects) or "",
    )
    if counts.stats.nul_removed:
        logger.warning(
            "source %s: removed %d NUL characters", name, counts.stats.nul_removed
        )


def _guard(
    counts: dict[str, SourceCounts], max_share: float, ctx: StageContext
) -> None:
    for name, source in counts.items():
        rejected = sum(source.rejects.values())
        if not source.rows_in or rejected / source.rows_in <= max_share:
            continue
        reasons = ", ".join(f"{r} {n}" for r, n in source.rejects.most_common(3))
        raise GuardError(
            f"source '{name}': {rejected} of {source.rows_in} rows rejected "
            f"({rejected / source.rows_in:.0%}, above max_reject_share "
            f"{max_share}): {reasons}. This is usually a wrong declaration "
            f"(format, delimiter, encoding, schema); see the rows and reasons in "
            f"{ctx.paths.rejects(STAGE)}, fix conf/dataset/{ctx.dataset}.yaml and "
            f"run `datakiln compose`."
        )


def metrics(counts: dict[str, SourceCounts]) -> dict[str, Any]:
    """The stage's metrics: totals, and the same counts per source."""
    per_source = {name: c.as_metrics() for name, c in counts.items()}
    by_reason: Counter[str] = Counter()
    for c in counts.values():
        by_reason.update(c.rejects)
    return {
        "rows_in": sum(c.rows_in for c in counts.values()),
        "rows_out": sum(c.rows_out for c in counts.values()),
        "rejects": sum(by_reason.values()),
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "nul_removed": sum(c.stats.nul_removed for c in counts.values()),
        "sources": per_source,
    }
