"""The split stage: train, validation and test by duplicate group, stratified.

A record's split is decided by its duplicate group (`dup_group`, the record id
of the kept row of the group; the record's own id where there is none), so
every group lands in one split. Groups are ordered by a hash of the seed and
the group id; within each stratum (the group's label in the declared task,
unlabelled groups forming a stratum of their own) the ordered groups are cut
at the declared fractions of rows. So the split is exact per stratum, does not
depend on the order of rows or the batch size, and changes with the seed.

This needs one global step (the table of groups); assigning the split to
records is then done batch by batch. The stage also enforces the gate that no
duplicate group spans two splits, and reports it in split.json beside the
gates of validate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakiln.config import DatasetConf, SplitConf
from datakiln.errors import ConfigError, GateError
from datakiln.progress import progress
from datakiln.stage import StageContext
from datakiln.tables import ParquetSink, read_arrow_batches
from datakiln.validate import file_sha256

logger = logging.getLogger(__name__)

INPUT_STAGE = "label"
BATCH_ROWS = 50_000
SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "split"
# The stratum of groups without a label in the stratifying task.
UNLABELLED = "<unlabelled>"
FRACTION_TOLERANCE = 1e-9


def check_conf(conf: DatasetConf, dataset: str) -> None:
    split = conf.split
    where = f"dataset.{dataset}.split"
    fractions = {name: getattr(split, name) for name in SPLITS}
    for name, share in fractions.items():
        if not 0.0 <= share <= 1.0:
            raise _conf_error(
                dataset, f"{where}.{name}", f"a share must be in [0, 1], found {share}"
            )
    if abs(sum(fractions.values()) - 1.0) > FRACTION_TOLERANCE:
        given = ", ".join(f"{k} {v}" for k, v in fractions.items())
        raise _conf_error(
            dataset, where, f"train, validation and test must add up to 1 ({given})"
        )
    tasks = [task.name for task in conf.label.tasks]
    if split.stratify is not None and split.stratify not in tasks:
        raise _conf_error(
            dataset,
            f"{where}.stratify",
            f"no label task '{split.stratify}' (tasks: {', '.join(tasks) or 'none'})",
        )


def _conf_error(dataset: str, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"conf/dataset/{dataset}.yaml: key '{key}': {problem}. Fix the declaration, "
        f"then run `datakiln compose`."
    )


# ------------------------------------------------------------------ transforms


def group_keys(frame: pd.DataFrame) -> pd.Series:
    """The duplicate group of each record: `dup_group`, else its own id."""
    own = frame["record_id"].astype(str)
    if "dup_group" not in frame.columns:
        return own
    return frame["dup_group"].astype(object).where(frame["dup_group"].notna(), own)


def count_groups(frame: pd.DataFrame, stratify: str | None) -> pd.DataFrame:
    """Rows per (group, label) in one batch; batches add up with `merge_groups`."""
    labels = (
        frame[stratify].astype(str).where(frame[stratify].notna(), UNLABELLED)
        if stratify is not None
        else pd.Series(UNLABELLED, index=frame.index, dtype=object)
    )
    keyed = pd.DataFrame({"group": group_keys(frame).astype(str), "label": labels})
    return (
        keyed.groupby(["group", "label"], sort=False)
        .size()
        .rename("rows")
        .reset_index()
    )


def merge_groups(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({"group": [], "label": [], "rows": []})
    merged = pd.concat(parts, ignore_index=True)
    return merged.groupby(["group", "label"], sort=False)["rows"].sum().reset_index()


def group_order(groups: pd.Series, seed: int) -> pd.Series:
    """A stable pseudo-random rank of each group: a hash of seed and group id."""
    salt = f"{seed}\x00".encode()
    keys = [
        int.from_bytes(hashlib.blake2b(salt + g.encode(), digest_size=8).digest())
        for g in groups
    ]
    return pd.Series(np.array(keys, dtype=np.uint64), index=groups.index)


def allocate(counts: pd.DataFrame, conf: SplitConf) -> pd.DataFrame:
    """Decide the split of every group.

    `counts` has rows per (group, label). A group's stratum is its most common
    label (ties go to the first label in sort order). Within a stratum, groups
    in hash order take the next stretch of rows; a group goes to the split in
    which the middle of its stretch falls. Returns group, stratum, rows, split.
    """
    ranked = counts.sort_values(
        ["group", "rows", "label"], ascending=[True, False, True]
    )
    groups = ranked.groupby("group", sort=True).agg(
        stratum=("label", "first"), rows=("rows", "sum")
    )
    groups = groups.reset_index()
    groups["order"] = group_order(groups["group"], conf.seed)
    groups = groups.sort_values(["stratum", "order", "group"], ignore_index=True)
    ends = groups.groupby("stratum")["rows"].cumsum()
    totals = groups.groupby("stratum")["rows"].transform("sum")
    middle = (ends - groups["rows"] / 2) / totals
    cuts = np.array([conf.train, conf.train + conf.validation])
    groups[SPLIT_COLUMN] = np.array(SPLITS)[np.searchsorted(cuts, middle, side="right")]
    return groups[["group", "stratum", "rows", SPLIT_COLUMN]]


def assign(frame: pd.DataFrame, allocation: pd.Series) -> pd.Series:
    """The split of each record, from its group's (allocation: group -> split)."""
    splits = group_keys(frame).astype(str).map(allocation)
    if splits.isna().any():
        missing = frame.loc[splits.isna(), "record_id"].iloc[0]
        raise GateError(
            f"record {missing!r} belongs to no allocated group: the labelled records "
            f"changed while split ran. Run `dvc repro split` again."
        )
    return splits.astype(str)


def groups_in_several_splits(pairs: pd.DataFrame) -> pd.Series:
    """Groups found in more than one split, from (group, split) pairs."""
    per_group = pairs.drop_duplicates().groupby("group")[SPLIT_COLUMN].nunique()
    return per_group[per_group > 1]


def strata_shares(allocation: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Rows per split and their shares, per stratum."""
    table = allocation.pivot_table(
        index="stratum", columns=SPLIT_COLUMN, values="rows", aggfunc="sum"
    )
    table = table.reindex(columns=list(SPLITS), fill_value=0).fillna(0).astype(int)
    report = {}
    for stratum, row in table.iterrows():
        total = int(row.sum())
        report[str(stratum)] = {
            "rows": total,
            **{name: round(int(row[name]) / total, 6) for name in SPLITS},
        }
    return report


# ------------------------------------------------------------------------ run


def run(ctx: StageContext) -> None:
    conf = ctx.conf.split
    check_conf(ctx.conf, ctx.dataset)
    path = ctx.paths.table(INPUT_STAGE)
    require_validated(ctx)
    names = pq.read_schema(path).names
    if conf.stratify is not None and conf.stratify not in names:
        raise _conf_error(
            ctx.dataset,
            f"dataset.{ctx.dataset}.split.stratify",
            f"{path.name} has no column '{conf.stratify}'",
        )
    wanted = ["record_id", "dup_group", *([conf.stratify] if conf.stratify else [])]
    keys = [c for c in wanted if c in names]

    parts = [
        count_groups(batch.to_pandas(), conf.stratify)
        for batch in read_arrow_batches(path, BATCH_ROWS, columns=keys)
    ]
    allocation = allocate(merge_groups(parts), conf)
    leaks = write_split(ctx, keys, allocation.set_index("group")[SPLIT_COLUMN])

    ctx.write_metrics(split_metrics(ctx, allocation, leaks))
    logger.info(
        "split@%s: %s",
        ctx.dataset,
        ", ".join(f"{n} {c:,}" for n, c in _rows(allocation).items()),
    )


def write_split(ctx: StageContext, keys: list[str], lookup: pd.Series) -> int:
    """Copy the records with their split added; return groups in several splits.

    The file only appears when complete, and not at all if a group leaked.
    """
    path = ctx.paths.table(INPUT_STAGE)
    total = max(1, math.ceil(pq.ParquetFile(path).metadata.num_rows / BATCH_ROWS))
    seen = [_no_pairs()]
    with ParquetSink(ctx.paths.table(ctx.stage), _empty_schema(path)) as sink:
        batches = read_arrow_batches(path, BATCH_ROWS)
        for batch in progress(batches, total, f"split {ctx.dataset}", "batches"):
            frame = batch.select(keys).to_pandas()
            splits = assign(frame, lookup)
            groups = group_keys(frame).astype(str)
            seen.append(
                pd.DataFrame({"group": groups, SPLIT_COLUMN: splits}).drop_duplicates()
            )
            table = pa.Table.from_batches([batch])
            column = pa.array(splits, pa.string())
            sink.write_table(table.append_column(SPLIT_COLUMN, column))
        leaks = groups_in_several_splits(pd.concat(seen))
        if len(leaks):
            raise GateError(
                f"gate dup_group_leak: value {len(leaks)}, bound <= 0: duplicate "
                f"groups span several splits, e.g. "
                f"{', '.join(map(repr, leaks.index[:3]))}. "
                f"This is a bug in datakiln.split; please report it."
            )
    return len(leaks)


def require_validated(ctx: StageContext) -> None:
    """Refuse to split records whose validation failed, is missing or is stale."""
    report_path = ctx.paths.metrics("validate")
    shown = report_path.relative_to(ctx.root).as_posix()
    rerun = f"Run `dvc repro validate@{ctx.dataset}` first."
    if not report_path.exists():
        raise GateError(f"{shown} is missing: the records are not validated. {rerun}")
    report = json.loads(report_path.read_text())
    if not report.get("passed"):
        gates = report.get("gates", {}).items()
        failed = [n for n, g in gates if not g["passed"] and g["action"] == "fail"]
        raise GateError(
            f"{shown}: validation failed (gates: {', '.join(failed) or 'none'}; schema "
            f"passed: {report.get('schema', {}).get('passed')}). Fix it, then {rerun}"
        )
    table = ctx.paths.table(INPUT_STAGE)
    if report.get("input", {}).get("sha256") != file_sha256(table):
        raise GateError(
            f"{shown} was written for another {table.name} (sha256 differs). {rerun}"
        )


def split_metrics(
    ctx: StageContext, allocation: pd.DataFrame, leaks: int
) -> dict[str, Any]:
    conf = ctx.conf.split
    groups = allocation.groupby(SPLIT_COLUMN)["group"].count()
    return {
        "seed": conf.seed,
        "stratify": conf.stratify,
        "fractions": {name: getattr(conf, name) for name in SPLITS},
        "rows": _rows(allocation),
        "rows_total": int(allocation["rows"].sum()),
        "groups": {name: int(groups.get(name, 0)) for name in SPLITS},
        "strata": strata_shares(allocation),
        "gates": {
            "dup_group_leak": {
                "value": leaks,
                "bound": 0,
                "op": "<=",
                "passed": leaks == 0,
                "action": "fail",
                "detail": f"{leaks} duplicate groups span more than one split",
            }
        },
    }


def _rows(allocation: pd.DataFrame) -> dict[str, int]:
    rows = allocation.groupby(SPLIT_COLUMN)["rows"].sum()
    return {name: int(rows.get(name, 0)) for name in SPLITS}


def _empty_schema(path: Path) -> pa.Schema:
    return pq.read_schema(path).append(pa.field(SPLIT_COLUMN, pa.string()))


def _no_pairs() -> pd.DataFrame:
    return pd.DataFrame({"group": [], SPLIT_COLUMN: []})
