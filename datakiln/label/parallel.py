"""The first pass of the label stage on every core: chunks voted in workers.

Voting is per batch and most of its time is pure Python (VADER, regular
expressions), so it runs in forked worker processes, each of which inherits
the compiled tasks (their functions are closures, which cannot be pickled).
Chunks go out as Arrow record batches and come back as small vote matrices,
in order; at most two chunks per worker are in flight, so memory stays
bounded by the chunk size, not the table. A record's votes depend only on the
record and the seed, so the result is the same as voting in one process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar, cast

import pyarrow as pa

from datakiln.label.tasks import Task

logger = logging.getLogger(__name__)

# Below this many records, starting workers costs more than it saves.
MIN_RECORDS = 10_000
# Chunks per worker over the whole table, so that workers finish together.
CHUNKS_PER_WORKER = 3

R = TypeVar("R")

# What a worker process runs each chunk with: set once, when it starts.
_worker: tuple[Callable[..., Any], list[Task], int] | None = None


def worker_count(records: int) -> int:
    """How many processes to vote with: 1 where forking is not worth it."""
    if records < MIN_RECORDS or not sys.platform.startswith("linux"):
        return 1
    return min(len(os.sched_getaffinity(0)), -(-records // (MIN_RECORDS // 2)))


def chunk_rows(records: int, workers: int, batch_rows: int) -> int:
    return max(1, min(batch_rows, -(-records // (workers * CHUNKS_PER_WORKER))))


def chunk_count(records: int, batch_rows: int, rows: int) -> int:
    """How many chunks `chunks` cuts a table of `records` into."""
    full, last = divmod(records, batch_rows)
    return full * -(-batch_rows // rows) + -(-last // rows)


def chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def vote_in_workers(
    batches: Iterable[pa.RecordBatch],
    vote: Callable[[pa.RecordBatch, list[Task], int], R],
    tasks: list[Task],
    seed: int,
    workers: int,
    while_waiting: Callable[[], None] | None = None,
) -> Iterator[R]:
    """`vote(batch, tasks, seed)` of every batch, in order, on `workers` processes.

    `while_waiting` runs in this process once the first chunks are out, so
    that slow work of our own (an import) overlaps the workers' voting.
    """
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(vote, tasks, seed),
    ) as pool:
        pending: deque[Future[Any]] = deque()
        for batch in batches:
            pending.append(pool.submit(_vote, batch))
            if while_waiting is not None and len(pending) == workers:
                while_waiting()
                while_waiting = None
            if len(pending) >= 2 * workers:
                yield cast(R, pending.popleft().result())
        if while_waiting is not None:
            while_waiting()
        while pending:
            yield cast(R, pending.popleft().result())


def _start_worker(vote: Callable[..., Any], tasks: list[Task], seed: int) -> None:
    global _worker
    _worker = (vote, tasks, seed)
    # Ctrl-C is for the parent, which stops the pool; workers finish quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _vote(batch: pa.RecordBatch) -> Any:
    assert _worker is not None, "worker started without its tasks"
    vote, tasks, seed = _worker
    return vote(batch, tasks, seed)
