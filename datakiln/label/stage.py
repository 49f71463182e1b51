"""The label stage: dedup.parquet in, label.parquet out, with label metrics.

It reads the deduplicated records twice, batch by batch. The first pass
applies every task's labelling functions and keeps only their votes, as small
integer codes. Between the passes each task's label model is fitted on all
votes at once (the one global step). The second pass copies every input
column as stored and appends, per task T, `T` (the label, null when no
function voted), `T_confidence` and `T_votes` (a JSON object of function ->
label for the functions that voted).

Where a task declares a gold column, a seeded share of records is held out:
their gold is hidden from the functions and from the fit of the model, and
every function and model is scored against it on exactly those records.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakiln.config import LabelConf
from datakiln.errors import SourceError
from datakiln.label.draws import record_draws
from datakiln.label.functions import Batch
from datakiln.label.models import Model, fit_model
from datakiln.label.parallel import (
    chunk_count,
    chunk_rows,
    chunks,
    vote_in_workers,
    worker_count,
)
from datakiln.label.report import (
    evaluation,
    function_summary,
    plot_rows,
    task_summary,
)
from datakiln.label.tasks import (
    ID_COLUMN,
    OUTSIDE,
    Task,
    check_columns,
    compile_tasks,
    decode,
    vote,
)
from datakiln.progress import progress
from datakiln.stage import StageContext
from datakiln.tables import ParquetSink, count_rows, read_arrow_batches

logger = logging.getLogger(__name__)

INPUT_STAGE = "dedup"
STAGE = "label"
PLOT = "label_distribution"
# The models every task with gold is scored with, besides its own.
COMPARED = ("majority", "dawid_skene")


@dataclass
class BatchVotes:
    """What the first pass keeps of one batch: no text, only codes and draws."""

    # task -> rows x functions, label codes, -1 where a function abstains
    votes: dict[str, np.ndarray]
    # task -> gold label codes as stored (-1 null, -2 not a label)
    gold: dict[str, np.ndarray]
    # per row: the draw that decides the holdout, and the one that breaks ties
    holdout_draws: np.ndarray
    tie_draws: np.ndarray

    @classmethod
    def concat(cls, parts: list[BatchVotes], tasks: list[Task]) -> BatchVotes:
        def join(arrays: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(arrays) if arrays else empty

        return cls(
            votes={
                t.name: join(
                    [p.votes[t.name] for p in parts],
                    np.empty((0, len(t.functions)), dtype=np.int16),
                )
                for t in tasks
            },
            gold={
                t.name: join([p.gold[t.name] for p in parts], np.empty(0, np.int16))
                for t in tasks
                if t.gold
            },
            holdout_draws=join([p.holdout_draws for p in parts], np.empty(0)),
            tie_draws=join([p.tie_draws for p in parts], np.empty(0, np.uint64)),
        )

    def held_out(self, task: Task) -> np.ndarray:
        return self.holdout_draws < task.holdout


def vote_batch(frame: pd.DataFrame, tasks: list[Task], seed: int) -> BatchVotes:
    """Apply every task's functions to one batch (pure; no global state).

    On held-out rows a task's gold column is blanked before its functions see
    the batch, so a function that reads it cannot pass gold through. Only that
    task's functions see it blanked: another task may take its own label from
    the same column (a folder name, say) on every record.
    """
    holdout_draws, tie_draws = record_draws(frame[ID_COLUMN], seed)
    gold = {t.name: t.encode(frame[t.gold]) for t in tasks if t.gold}
    batch = Batch(frame)
    votes = {}
    for task in tasks:
        seen = batch
        if task.gold and task.holdout > 0:
            seen = batch.hiding(task.gold, holdout_draws < task.holdout)
        votes[task.name] = vote(seen, task)
    return BatchVotes(votes, gold, holdout_draws, tie_draws)


def visible_gold(task: Task, votes: BatchVotes) -> np.ndarray | None:
    """Gold codes a model may learn from: not held out, and a label."""
    if not task.gold:
        return None
    gold = votes.gold[task.name]
    return np.where(votes.held_out(task) | (gold == OUTSIDE), -1, gold)


def fit_models(tasks: list[Task], votes: BatchVotes) -> dict[str, dict[str, Model]]:
    """Per task, its own model (the one that labels), and, for a task with
    gold, majority vote and Dawid-Skene too, to compare."""
    models: dict[str, dict[str, Model]] = {}
    for task in tasks:
        kinds = [task.model]
        if task.gold:
            kinds += [k for k in COMPARED if k != task.model]
        task_votes = votes.votes[task.name]
        gold = visible_gold(task, votes)
        models[task.name] = {
            kind: fit_model(kind, task_votes, len(task.labels), task.tie_break, gold)
            for kind in kinds
        }
    return models


def votes_json(votes: np.ndarray, task: Task) -> list[str]:
    """Per row, a JSON object of function -> label for the functions that voted."""
    pieces = []
    for name in task.function_names:
        key = json.dumps(name, ensure_ascii=False)
        fragments = [
            f", {key}: {json.dumps(label, ensure_ascii=False)}" for label in task.labels
        ]
        pieces.append(np.array([*fragments, ""], dtype=object))
    joined = np.full(votes.shape[0], "", dtype=object)
    for j, table in enumerate(pieces):
        joined = joined + table[np.where(votes[:, j] >= 0, votes[:, j], -1)]
    return ["{" + row[2:] + "}" for row in joined.tolist()]


def label_columns(
    task: Task, codes: np.ndarray, confidence: np.ndarray, votes: np.ndarray
) -> dict[str, pa.Array]:
    """The columns task `task` adds to one batch."""
    return {
        task.name: pa.array(decode(codes, task.labels), type=pa.string()),
        f"{task.name}_confidence": pa.array(
            confidence, type=pa.float64(), mask=np.isnan(confidence)
        ),
        f"{task.name}_votes": pa.array(votes_json(votes, task), type=pa.string()),
    }


def label_frame(
    frame: pd.DataFrame, tasks: list[Task], models: dict[str, Model], seed: int
) -> pd.DataFrame:
    """One batch with every task's columns appended, given fitted models."""
    votes = vote_batch(frame, tasks, seed)
    out = frame.copy()
    for task in tasks:
        task_votes = votes.votes[task.name]
        codes, confidence = models[task.name].predict(task_votes, votes.tie_draws)
        columns = label_columns(task, codes, confidence, task_votes)
        for name, values in columns.items():
            out[name] = values.to_pandas().to_numpy()
    return out


# ------------------------------------------------------------------- the run


def run(ctx: StageContext) -> None:
    started = time.perf_counter()
    conf = ctx.conf.label
    importable_from(ctx.root)
    tasks = compile_tasks(conf, ctx.dataset)
    source, target = ctx.paths.table(INPUT_STAGE), ctx.paths.table(STAGE)
    if not source.exists():
        raise SourceError(
            f"{source} is missing. Run `dvc repro {INPUT_STAGE}@{ctx.dataset}` first."
        )
    schema = pq.read_schema(source)
    check_columns(tasks, schema.names, source)
    records = count_rows(source)
    logger.info("label@%s: %d records, %d tasks", ctx.dataset, records, len(tasks))

    votes = collect_votes(source, tasks, conf, records, ctx.dataset)
    models = fit_models(tasks, votes)
    codes = write_labelled(source, target, schema, tasks, votes, models, conf)

    summaries: dict[str, Any] = {}
    plot: list[dict[str, Any]] = []
    for task in tasks:
        summaries[task.name] = task_metrics(task, votes, models, codes)
        plot += plot_rows(task, codes[task.name])
        log_task(ctx.dataset, summaries[task.name], task)
    ctx.write_metrics({"records": records, "tasks": summaries})
    write_csv(ctx.paths.plot(PLOT), plot, ["task", "label", "records"])
    logger.info(
        "label@%s: wrote %s in %.1f s",
        ctx.dataset,
        target,
        time.perf_counter() - started,
    )


def collect_votes(
    source: Path, tasks: list[Task], conf: LabelConf, records: int, dataset: str
) -> BatchVotes:
    """First pass: every task's votes on every record, batch by batch.

    On a large table the batches are cut into chunks voted by one worker
    process per core; meanwhile this process loads the label model library.
    """
    columns = read_columns(tasks)
    source_batches = read_arrow_batches(source, conf.batch_rows, columns)
    workers = worker_count(records)
    desc = f"label@{dataset}"
    if workers == 1:
        parts = [
            vote_arrow(batch, tasks, conf.seed)
            for batch in progress(
                source_batches, batches(records, conf.batch_rows), desc, "batches"
            )
        ]
        return BatchVotes.concat(parts, tasks)

    rows = chunk_rows(records, workers, conf.batch_rows)
    logger.info("%s: voting in %d processes, %d records a chunk", desc, workers, rows)
    voted = vote_in_workers(
        chunks(source_batches, rows),
        vote_arrow,
        tasks,
        conf.seed,
        workers,
        while_waiting=lambda: preload(tasks),
    )
    total = chunk_count(records, conf.batch_rows, rows)
    parts = list(progress(voted, total, desc, "chunks"))
    return BatchVotes.concat(parts, tasks)


def vote_arrow(batch: pa.RecordBatch, tasks: list[Task], seed: int) -> BatchVotes:
    return vote_batch(batch.to_pandas(), tasks, seed)


def preload(tasks: list[Task]) -> None:
    """Import the label model library now if a task will need it."""
    if any(task.gold or task.model != "majority" for task in tasks):
        import crowdkit.aggregation  # noqa: F401


def write_labelled(
    source: Path,
    target: Path,
    schema: pa.Schema,
    tasks: list[Task],
    votes: BatchVotes,
    models: dict[str, dict[str, Model]],
    conf: LabelConf,
) -> dict[str, np.ndarray]:
    """Second pass: input columns as stored, plus each task's columns.

    Returns each task's final label codes, for the metrics.
    """
    final: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    offset = 0
    with ParquetSink(target, empty_schema=output_schema(schema, tasks)) as sink:
        for batch in read_arrow_batches(source, conf.batch_rows):
            rows = slice(offset, offset + batch.num_rows)
            table = pa.Table.from_batches([batch])
            for task in tasks:
                model = models[task.name][task.model]
                task_votes = votes.votes[task.name][rows]
                codes, confidence = model.predict(task_votes, votes.tie_draws[rows])
                columns = label_columns(task, codes, confidence, task_votes)
                for name, values in columns.items():
                    table = table.append_column(name, values)
                final[task.name].append(codes)
            sink.write_table(table)
            offset += batch.num_rows
    return {
        name: np.concatenate(parts) if parts else np.empty(0, np.int16)
        for name, parts in final.items()
    }


def task_metrics(
    task: Task,
    votes: BatchVotes,
    models: dict[str, dict[str, Model]],
    codes: dict[str, np.ndarray],
) -> dict[str, Any]:
    task_votes = votes.votes[task.name]
    metrics = task_summary(task, codes[task.name])
    if not task.gold:
        metrics["functions"] = function_summary(task, task_votes, codes[task.name])
        return metrics

    gold = votes.gold[task.name]
    scored = votes.held_out(task) if task.holdout > 0 else np.ones(len(gold), bool)
    metrics["functions"] = function_summary(
        task, task_votes, codes[task.name], gold, scored
    )
    predicted = {
        kind: model.predict(task_votes, votes.tie_draws)[0]
        for kind, model in models[task.name].items()
    }
    metrics["evaluation"] = evaluation(task, predicted, gold, scored)
    return metrics


def log_task(dataset: str, metrics: dict[str, Any], task: Task) -> None:
    logger.info(
        "label@%s: %s: %d of %d records labelled (coverage %s) by %s",
        dataset,
        task.name,
        metrics["labelled"],
        metrics["records"],
        metrics["coverage"],
        task.model,
    )
    evaluation = metrics.get("evaluation", {})
    # Without a holdout, gold is scored on records whose gold the functions saw.
    scored = "held-out" if evaluation.get("holdout") else "(not held out)"
    for kind, score in evaluation.get("models", {}).items():
        logger.info(
            "label@%s: %s: %s on %d %s records: accuracy %s, coverage %s",
            dataset,
            task.name,
            kind,
            score["rows"],
            scored,
            score["accuracy"],
            score["coverage"],
        )


# -------------------------------------------------------------------- helpers


def read_columns(tasks: Iterable[Task]) -> list[str] | None:
    """The columns the functions read; None (all) if a python function runs."""
    columns = {ID_COLUMN}
    for task in tasks:
        if task.gold:
            columns.add(task.gold)
        for function in task.functions:
            if function.columns is None:
                return None
            columns.update(function.columns)
    return sorted(columns)


def output_schema(schema: pa.Schema, tasks: Iterable[Task]) -> pa.Schema:
    """The input schema plus every task's columns, as `label_columns` types them."""
    for task in tasks:
        none = np.empty(0, dtype=np.int16)
        empty_votes = np.empty((0, len(task.functions)), dtype=np.int16)
        columns = label_columns(task, none, np.empty(0), empty_votes)
        for name, values in columns.items():
            schema = schema.append(pa.field(name, values.type))
    return schema


def batches(records: int, batch_rows: int) -> int:
    return -(-records // batch_rows)


def importable_from(root: Path) -> None:
    """Let `python` functions name modules of the project, as DVC runs there."""
    path = str(root.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write plot data atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
    os.replace(tmp, path)
