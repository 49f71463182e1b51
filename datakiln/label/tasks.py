"""Label tasks: a set of labels, the functions that vote them, and the model.

`compile_tasks` checks a dataset's whole `label:` section at start-up;
`vote` applies a task's functions to one batch and encodes the votes as a
matrix of label codes (rows x functions, -1 where a function abstains), the
compact form the label model is fitted on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datakiln.config import LabelConf, LabelTaskConf
from datakiln.errors import ConfigError
from datakiln.label.declaration import Where
from datakiln.label.functions import (
    Batch,
    LabellingFunction,
    VoteError,
    compile_function,
)
from datakiln.label.models import LEARNED

MODELS = ("majority", *LEARNED)
TIE_BREAKS = ("random", "abstain")
ID_COLUMN = "record_id"
# Suffixes of the columns a task adds beside its label column.
SUFFIXES = ("_confidence", "_votes")

ABSTAIN = -1
# A gold value that is not among the task's labels: known, and never matched.
OUTSIDE = -2

COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    functions: tuple[LabellingFunction, ...]
    model: str
    tie_break: str
    gold: str | None
    holdout: float
    where: Where

    @property
    def function_names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def output_columns(self) -> list[str]:
        return [self.name] + [self.name + suffix for suffix in SUFFIXES]

    def encode(self, values: pd.Series) -> np.ndarray:
        """Label codes of `values`: -1 for null, -2 for a value not a label.

        Labels are declared as strings, so a value is compared as its text: a
        gold column of integers matches labels written `"1"`, `"2"`.
        """
        known = pd.notna(values).to_numpy()
        texts = values.to_numpy(dtype=object, copy=True)
        texts[known] = texts[known].astype(str)
        texts[~known] = None
        codes = pd.Categorical(texts, categories=list(self.labels)).codes
        return np.where(known & (codes < 0), OUTSIDE, codes).astype(np.int16)


def compile_tasks(conf: LabelConf, dataset: str) -> list[Task]:
    """Check every task of a `label:` section and compile its functions."""
    root = Where(dataset)
    if conf.batch_rows <= 0:
        raise root.error("batch_rows", f"must be positive, found {conf.batch_rows}")
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for i, task_conf in enumerate(conf.tasks):
        where = root.child(f"tasks[{i}]")
        if task_conf.name in seen:
            raise where.error(
                "name", f"task '{task_conf.name}' is also tasks[{seen[task_conf.name]}]"
            )
        seen[task_conf.name] = i
        tasks.append(compile_task(task_conf, where))
    return tasks


def compile_task(conf: LabelTaskConf, where: Where) -> Task:
    if not COLUMN_NAME.match(conf.name):
        raise where.error(
            "name",
            f"'{conf.name}' names the label column, so it must be letters, digits "
            f"and underscores, not starting with a digit",
        )
    labels = _labels(conf.labels, where)
    if conf.model not in MODELS:
        raise where.error("model", f"unknown model '{conf.model}'; use one of {MODELS}")
    if conf.tie_break not in TIE_BREAKS:
        raise where.error(
            "tie_break",
            f"unknown tie_break '{conf.tie_break}'; use one of {TIE_BREAKS}",
        )
    if not 0 <= conf.holdout < 1:
        raise where.error("holdout", f"must be in [0, 1), found {conf.holdout}")
    if not conf.functions:
        raise where.error("functions", "a task needs at least one labelling function")

    functions: list[LabellingFunction] = []
    names: dict[str, int] = {}
    for j, function_conf in enumerate(conf.functions):
        at = where.child(f"functions[{j}]")
        if function_conf.name in names:
            raise at.error(
                "name",
                f"function '{function_conf.name}' is also functions"
                f"[{names[function_conf.name]}] of this task",
            )
        names[function_conf.name] = j
        functions.append(compile_function(function_conf, labels, at))
    return Task(
        name=conf.name,
        labels=labels,
        functions=tuple(functions),
        model=conf.model,
        tie_break=conf.tie_break,
        gold=conf.gold,
        holdout=conf.holdout,
        where=where,
    )


def _labels(labels: Iterable[str], where: Where) -> tuple[str, ...]:
    out: list[str] = []
    for k, label in enumerate(labels):
        if not label:
            raise where.error(f"labels[{k}]", "a label is empty")
        if label in out:
            raise where.error(f"labels[{k}]", f"label '{label}' is listed twice")
        out.append(label)
    if not out:
        raise where.error(
            "labels", "a task needs the list of labels its functions vote"
        )
    return tuple(out)


def check_columns(tasks: Iterable[Task], columns: Iterable[str], table: Path) -> None:
    """Stop before any work if a task reads or writes a column it should not."""
    present = set(columns)
    shown = ", ".join(sorted(present))
    if ID_COLUMN not in present:
        raise ConfigError(
            f"{table}: no '{ID_COLUMN}' column (columns: {shown}); the label stage "
            f"needs the stable record id. Rebuild it with `dvc repro`."
        )
    written: dict[str, str] = {}
    for task in tasks:
        for function in task.functions:
            for column in function.columns or ():
                if column not in present:
                    raise function.where.error(
                        "column", f"no column '{column}' in {table} (columns: {shown})"
                    )
        if task.gold is not None and task.gold not in present:
            raise task.where.error(
                "gold", f"no column '{task.gold}' in {table} (columns: {shown})"
            )
        for column in task.output_columns:
            if column in present:
                raise task.where.error(
                    "name",
                    f"task '{task.name}' would overwrite the input column '{column}' "
                    f"of {table}; name the task differently",
                )
            if column in written:
                raise task.where.error(
                    "name",
                    f"column '{column}' is also written by task '{written[column]}'",
                )
            written[column] = task.name


def vote(batch: Batch | pd.DataFrame, task: Task) -> np.ndarray:
    """Every function's vote on every row of one batch, as label codes.

    The result has one row per record and one column per function, in the
    declared order; -1 where the function abstains.
    """
    if isinstance(batch, pd.DataFrame):
        batch = Batch(batch)
    frame = batch.frame
    votes = np.full((len(frame), len(task.functions)), ABSTAIN, dtype=np.int16)
    for j, function in enumerate(task.functions):
        labels = function(batch)
        codes = task.encode(labels)
        if (codes == OUTSIDE).any():
            _raise_outside(frame, task, function, labels, codes)
        votes[:, j] = codes
    return votes


def _raise_outside(
    frame: pd.DataFrame,
    task: Task,
    function: LabellingFunction,
    labels: pd.Series,
    codes: np.ndarray,
) -> None:
    row = int(np.flatnonzero(codes == OUTSIDE)[0])
    record = frame[ID_COLUMN].iloc[row] if ID_COLUMN in frame else f"at row {row}"
    count = int((codes == OUTSIDE).sum())
    raise VoteError(
        f"{function.where.file}: function '{function.name}' "
        f"({function.where.key()}) voted '{labels.iloc[row]}' for record {record} "
        f"({count} such votes in this batch), which is not a label of task "
        f"'{task.name}' {list(task.labels)}. Add it to the task's `labels`, or map "
        f"it with a `table`."
    )


def decode(codes: np.ndarray, labels: Iterable[str]) -> np.ndarray:
    """Label strings of label codes; None for every negative code."""
    lookup = np.array([*labels, None], dtype=object)
    return lookup[np.where(codes >= 0, codes, len(lookup) - 1)]
