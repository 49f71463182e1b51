"""Stage `dedup`: remove exact and near duplicate records.

Texts are compared in their comparison form (`comparison_key`: NFKC, case
folded, whitespace collapsed). A record whose comparison form was seen before
is an exact duplicate of the first record that had it. The others are
near-duplicate candidates: a MinHash of their word shingles is looked up in a
MinHash LSH index of all earlier texts (datasketch), and a record whose
estimated Jaccard similarity to an earlier kept record reaches `threshold` is a
near duplicate of the most similar one (the earliest on a tie).

Records are read in the order of the table, batch by batch, and each is
compared only with earlier ones, so the first record of each group is kept and
the same input always keeps the same records. This is the one global step of
the pipeline: the index of earlier texts must see the whole table. It holds one
MinHash per distinct text, and nothing else of the records; the table is read a
second time to write the results.

Duplicate groups: records joined by exact or near similarity, directly or
through removed records, form one group, named by the record id of its first
(kept) record. A record can be kept in a group whose first record it does not
duplicate: it resembles a removed record that resembles the first one. The
split stage keeps each group in one split.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import multiprocessing
import os
import re
import signal
import unicodedata
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHash, MinHashLSH

from datakiln.config import DedupConf
from datakiln.errors import ConfigError, GuardError, SchemaError, SourceError
from datakiln.progress import progress
from datakiln.stage import StageContext
from datakiln.tables import ParquetSink, count_rows, read_arrow_batches

logger = logging.getLogger(__name__)

STAGE = "dedup"
BATCH_ROWS = 10_000
KEPT, EXACT, NEAR = 0, 1, 2
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
_WORD = re.compile(r"\w+")
# How datasketch weighs false positives against false negatives when it picks
# the LSH bands. Every candidate is checked against the threshold, so a false
# positive costs one comparison, while a false negative keeps a duplicate: at
# the default (0.5, 0.5), half the pairs at the threshold and a fifth of those
# 0.05 above it are never compared.
LSH_WEIGHTS = (0.05, 0.95)


def comparison_key(text: str) -> str:
    """The form in which two texts are compared: NFKC, case folded, whitespace
    collapsed. `Å` as U+212B or U+00C5, in NFC or NFD, is one key."""
    folded = unicodedata.normalize(
        "NFKC", unicodedata.normalize("NFKC", text).casefold()
    )
    return " ".join(folded.split())


def shingles(key: str, size: int) -> list[bytes]:
    """The word shingles of a comparison key; punctuation is not a word, so it
    never makes two texts differ. A text of fewer words is one shingle."""
    words = _WORD.findall(key)
    if len(words) <= size:
        return [" ".join(words).encode()] if words else []
    return [
        " ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)
    ]


def signatures(keys: Sequence[str], conf: DedupConf) -> tuple[np.ndarray, np.ndarray]:
    """MinHash values (datasketch) of the word shingles of each comparison key:
    a (len(keys), num_perm) array, and which keys have words at all.

    A pure function of its arguments, so it can run in another process.
    """
    shingle_sets = [shingles(key, conf.shingle) for key in keys]
    has_words = np.array([bool(s) for s in shingle_sets], dtype=bool)
    values = np.zeros((len(keys), conf.num_perm), dtype=np.uint64)
    minhashes = MinHash.generator(
        [s for s in shingle_sets if s],
        num_perm=conf.num_perm,
        seed=conf.seed,
        hashfunc=_hash32,
        permutations=_permutations(conf.num_perm, conf.seed),
    )
    for row, minhash in zip(np.flatnonzero(has_words), minhashes, strict=True):
        values[row] = minhash.hashvalues
    return values, has_words


def _hash32(data: bytes) -> int:
    # MinHash needs a base hash that tells shingles apart; the seeded random
    # permutations applied after it do the rest. CRC-32 does that three times
    # faster than datasketch's default SHA-1.
    return zlib.crc32(data)


@functools.cache
def _permutations(num_perm: int, seed: int) -> Any:
    return MinHash(num_perm, seed=seed).permutations


@dataclass
class _Batch:
    """Records of one batch whose exact duplicates are decided."""

    # Positions of the exact duplicates, resolved once near duplicates are known.
    exact: list[int]
    # Positions and comparison keys of the records to look near duplicates for.
    positions: list[int]
    keys: list[str]


class Deduplicator:
    """Decides, record by record in table order, which records duplicate an
    earlier one. Feed it batches with `add`, then read `decisions()`.

    `add` is `prepare` (exact duplicates), `signatures` (MinHash) and `index`
    (near duplicates, through the LSH index). A caller may compute the
    signatures of one batch while the previous batch is indexed, as long as it
    prepares and indexes batches in table order.
    """

    def __init__(self, conf: DedupConf) -> None:
        self.conf = conf
        self.record_ids: list[str] = []
        self.sources: list[str] = []
        self._status = array("b")
        # Position of the kept record a removed record duplicates; -1 if kept.
        self._match = array("q")
        self._similarity = array("d")
        self._first_by_key: dict[bytes, int] = {}
        self._edges: tuple[array[int], array[int]] = (array("q"), array("q"))
        self._lsh: MinHashLSH | None = None
        self._hashvalues: dict[int, np.ndarray] = {}
        if conf.near:
            self._lsh = MinHashLSH(
                threshold=conf.threshold, num_perm=conf.num_perm, weights=LSH_WEIGHTS
            )

    def __len__(self) -> int:
        return len(self.record_ids)

    def add(
        self,
        record_ids: Sequence[str],
        sources: Sequence[str],
        texts: Sequence[str | None],
    ) -> None:
        """Decide the next records of the table (null texts are never duplicates)."""
        batch = self.prepare(record_ids, sources, texts)
        self.index(batch, *signatures(batch.keys, self.conf))

    def prepare(
        self,
        record_ids: Sequence[str],
        sources: Sequence[str],
        texts: Sequence[str | None],
    ) -> _Batch:
        """Take the next records and decide which are exact duplicates."""
        base = len(self)
        self.record_ids.extend(record_ids)
        self.sources.extend(sources)
        n = len(texts)
        self._status.extend([KEPT] * n)
        self._match.extend([-1] * n)
        self._similarity.extend([math.nan] * n)

        batch = _Batch([], [], [])
        for pos, text in enumerate(texts, start=base):
            if text is None:
                continue
            key = comparison_key(text)
            if self.conf.exact:
                digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
                first = self._first_by_key.setdefault(digest, pos)
                if first != pos:
                    self._mark(pos, EXACT, first, 1.0)
                    batch.exact.append(pos)
                    continue
            if self._lsh is not None:
                batch.positions.append(pos)
                batch.keys.append(key)
        return batch

    def index(self, batch: _Batch, values: np.ndarray, has_words: np.ndarray) -> None:
        """Decide the near duplicates of a prepared batch, given its signatures."""
        if self._lsh is not None:
            self._index(self._lsh, batch, values, has_words)
        # A copy of a record removed as a near duplicate duplicates the same
        # kept record, with the same similarity.
        for pos in batch.exact:
            first = self._match[pos]
            if self._status[first] == NEAR:
                self._status[pos] = NEAR
                self._match[pos] = self._match[first]
                self._similarity[pos] = self._similarity[first]

    def _index(
        self, lsh: MinHashLSH, batch: _Batch, values: np.ndarray, has_words: np.ndarray
    ) -> None:
        conf = self.conf
        # MinHash values are below 2**32: kept as uint32, they take half the memory.
        compact = values.astype(np.uint32)
        for row in np.flatnonzero(has_words):
            pos = batch.positions[row]
            minhash = LeanMinHash(seed=conf.seed, hashvalues=values[row])
            best, best_similarity = -1, -1.0
            for other in sorted(lsh.query(minhash)):
                equal = np.count_nonzero(compact[row] == self._hashvalues[other])
                similarity = equal / conf.num_perm
                if similarity < conf.threshold:
                    continue
                self._edges[0].append(pos)
                self._edges[1].append(other)
                if self._status[other] == KEPT and similarity > best_similarity:
                    best, best_similarity = other, similarity
            if best >= 0:
                self._mark(pos, NEAR, best, best_similarity)
            lsh.insert(pos, minhash, check_duplication=False)
            self._hashvalues[pos] = compact[row]

    def _mark(self, pos: int, status: int, match: int, similarity: float) -> None:
        self._status[pos] = status
        self._match[pos] = match
        self._similarity[pos] = similarity
        self._edges[0].append(pos)
        self._edges[1].append(match)

    def decisions(self) -> Decisions:
        """What to do with each record so far, and its duplicate group."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = len(self)
        status = np.frombuffer(self._status, dtype=np.int8).copy()
        match = np.frombuffer(self._match, dtype=np.int64).copy()
        similarity = np.frombuffer(self._similarity, dtype=np.float64).copy()
        rows = np.frombuffer(self._edges[0], dtype=np.int64)
        cols = np.frombuffer(self._edges[1], dtype=np.int64)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        # Each record is joined only to earlier ones, so the first record of a
        # group was compared with nothing earlier and is kept.
        first = np.full(labels.max(initial=-1) + 1, n, dtype=np.int64)
        np.minimum.at(first, labels, np.arange(n))
        return Decisions(
            record_ids=self.record_ids,
            sources=self.sources,
            status=status,
            match=match,
            similarity=similarity,
            group=first[labels],
        )


@dataclass
class Decisions:
    record_ids: list[str]
    sources: list[str]
    status: np.ndarray
    match: np.ndarray
    similarity: np.ndarray
    # Position of the first record of each record's duplicate group.
    group: np.ndarray

    def counts(self) -> dict[str, dict[str, int]]:
        """Per source: rows in, exact and near duplicates, rows out."""
        per_source: dict[str, Counter[int]] = defaultdict(Counter)
        for source, status in zip(self.sources, self.status.tolist(), strict=True):
            per_source[source][status] += 1
        return {
            source: {
                "rows_in": sum(c.values()),
                "exact": c[EXACT],
                "near": c[NEAR],
                "rows_out": c[KEPT],
            }
            for source, c in sorted(per_source.items())
        }

    def split(self, table: pa.Table, start: int) -> tuple[pa.Table, pa.Table]:
        """The kept and removed records of `table`, rows `start`... of the input."""
        end = start + table.num_rows
        ids = table.column("record_id").to_pylist()
        if ids != self.record_ids[start:end]:
            raise SourceError(
                f"the input of dedup changed while dedup read it (rows {start} to "
                f"{end}). Run `dvc repro dedup` again."
            )
        status = self.status[start:end]
        group = [self.record_ids[g] for g in self.group[start:end]]
        keep = status == KEPT
        kept = table.filter(pa.array(keep)).append_column(
            "dup_group", pa.array(np.array(group, dtype=object)[keep], pa.string())
        )
        removed = ~keep
        match = self.match[start:end][removed]
        similarity = self.similarity[start:end][removed]
        of = [self.record_ids[m] for m in match]
        reasons = [REASONS[s] for s in status[removed]]
        details = [
            f"{reason.replace('_', ' ')} of {other} (similarity {sim:.3f})"
            for reason, other, sim in zip(reasons, of, similarity, strict=True)
        ]
        rejects = table.filter(pa.array(removed))
        for name, values, type_ in (
            ("reject_stage", [STAGE] * len(of), pa.string()),
            ("reject_reason", reasons, pa.string()),
            ("reject_detail", details, pa.string()),
            ("duplicate_of", of, pa.string()),
            ("similarity", similarity, pa.float64()),
            ("dup_group", np.array(group, dtype=object)[removed], pa.string()),
        ):
            rejects = rejects.append_column(name, pa.array(values, type_))
        return kept, rejects


def dedup_frame(
    frame: pd.DataFrame, conf: DedupConf
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deduplicate a DataFrame of records: (kept records, removed records)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    dedup = Deduplicator(conf)
    dedup.add(*_columns(table, conf.column))
    kept, rejects = dedup.decisions().split(table, 0)
    return kept.to_pandas(), rejects.to_pandas()


def _columns(
    table: pa.Table | pa.RecordBatch, column: str
) -> tuple[list[str], list[str], list[str | None]]:
    return (
        table.column("record_id").to_pylist(),
        table.column("source_name").to_pylist(),
        table.column(column).to_pylist(),
    )


# ---------------------------------------------------------------------- run


def check_conf(conf: DedupConf, dataset: str) -> None:
    """Fail before reading anything if the declaration cannot work."""
    where = f"conf/dataset/{dataset}.yaml: key 'dataset.{dataset}.dedup"
    checks: list[tuple[str, bool, str, Any]] = [
        ("threshold", 0 < conf.threshold <= 1, "a number in (0, 1]", conf.threshold),
        ("num_perm", conf.num_perm >= 2, "an integer of at least 2", conf.num_perm),
        ("shingle", conf.shingle >= 1, "an integer of at least 1", conf.shingle),
        (
            "max_removed_share",
            0 <= conf.max_removed_share <= 1,
            "a share in [0, 1]",
            conf.max_removed_share,
        ),
    ]
    for key, ok, expected, found in checks:
        if not ok:
            raise ConfigError(
                f"{where}.{key}': expected {expected}, found {found}. Fix it, then "
                f"run `datakiln compose`."
            )


def check_guard(
    counts: dict[str, dict[str, int]], conf: DedupConf, dataset: str
) -> None:
    """Stop if dedup would remove more than `max_removed_share` of a source."""
    over = []
    for source, c in counts.items():
        removed = c["exact"] + c["near"]
        share = removed / c["rows_in"] if c["rows_in"] else 0.0
        if share > conf.max_removed_share:
            over.append(
                f"source '{source}': {share:.1%} ({removed} of {c['rows_in']} "
                f"records: {c['exact']} exact, {c['near']} near duplicates)"
            )
    if over:
        raise GuardError(
            f"dedup would remove more than dataset.{dataset}.dedup.max_removed_share "
            f"= {conf.max_removed_share:.1%} of a source: {'; '.join(over)}. Nothing "
            f"was written. If the source really repeats itself that much, raise the "
            f"bound in conf/dataset/{dataset}.yaml; otherwise check dedup.column and "
            f"dedup.threshold ({conf.threshold})."
        )


def _check_columns(path: Any, schema: pa.Schema, column: str, dataset: str) -> None:
    for name in ("record_id", "source_name"):
        if name not in schema.names:
            raise SchemaError(
                f"{path}: no record column '{name}'; the columns are "
                f"{schema.names}. Run `dvc repro clean@{dataset}` to rebuild it."
            )
    if column not in schema.names:
        raise SchemaError(
            f"{path}: no column '{column}' named by dataset.{dataset}.dedup.column; "
            f"the columns are {schema.names}. Fix it in conf/dataset/{dataset}.yaml, "
            f"then run `datakiln compose`."
        )


def _batches(path: Any, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    yield from read_arrow_batches(path, BATCH_ROWS, columns=columns)


def decide(
    dedup: Deduplicator, batches: Iterable[pa.RecordBatch], parallel: bool
) -> None:
    """Feed `batches` to `dedup` in order. With `parallel`, a worker process
    computes the MinHash signatures of each batch while this process indexes
    the one before: the two halves of the work take about as long."""
    column = dedup.conf.column
    if not (parallel and dedup.conf.near):
        for batch in batches:
            dedup.add(*_columns(batch, column))
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, context, initializer=_ignore_sigint) as pool:
        pending: tuple[_Batch, Future[tuple[np.ndarray, np.ndarray]]] | None = None
        for batch in batches:
            prepared = dedup.prepare(*_columns(batch, column))
            future = pool.submit(signatures, prepared.keys, dedup.conf)
            if pending is not None:
                dedup.index(pending[0], *pending[1].result())
            pending = (prepared, future)
        if pending is not None:
            dedup.index(pending[0], *pending[1].result())


def _ignore_sigint() -> None:
    # Ctrl-C is the main process's to handle; the worker just stops with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(ctx: StageContext) -> None:
    conf = ctx.conf.dedup
    check_conf(conf, ctx.dataset)
    source = ctx.paths.table("clean")
    if not source.exists():
        raise SourceError(
            f"{source} is missing. Run `dvc repro clean@{ctx.dataset}` first."
        )
    schema = pq.read_schema(source)
    _check_columns(source, schema, conf.column, ctx.dataset)

    dedup = Deduplicator(conf)
    n_batches = math.ceil(count_rows(source) / BATCH_ROWS)
    columns = ["record_id", "source_name", conf.column]
    batches = progress(
        _batches(source, columns), n_batches, f"dedup@{ctx.dataset}", "batches"
    )
    decide(dedup, batches, parallel=n_batches > 1 and _can_fork())
    decisions = dedup.decisions()
    counts = decisions.counts()
    check_guard(counts, conf, ctx.dataset)

    kept_schema = schema.append(pa.field("dup_group", pa.string()))
    rejects_schema = schema
    for name, type_ in (
        ("reject_stage", pa.string()),
        ("reject_reason", pa.string()),
        ("reject_detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("similarity", pa.float64()),
        ("dup_group", pa.string()),
    ):
        rejects_schema = rejects_schema.append(pa.field(name, type_))
    start = 0
    with (
        ParquetSink(ctx.paths.table(STAGE), kept_schema) as kept_sink,
        ParquetSink(ctx.paths.rejects(STAGE), rejects_schema) as rejects_sink,
    ):
        for batch in _batches(source):
            kept, rejects = decisions.split(pa.Table.from_batches([batch]), start)
            start += batch.num_rows
            if kept.num_rows:
                kept_sink.write_table(kept)
            if rejects.num_rows:
                rejects_sink.write_table(rejects)

    total = _metrics(counts, decisions)
    ctx.write_metrics(total)
    logger.info(
        "dedup@%s: %d of %d records kept; %d exact and %d near duplicates removed",
        ctx.dataset,
        total["rows_out"],
        total["rows_in"],
        total["exact"],
        total["near"],
    )


def _can_fork() -> bool:
    """Whether a worker process can share the work: a second core, and fork
    (a spawned worker would spend longer importing than it saves)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return cores > 1 and "fork" in multiprocessing.get_all_start_methods()


def _metrics(counts: dict[str, dict[str, int]], decisions: Decisions) -> dict[str, Any]:
    totals = Counter[str]()
    for c in counts.values():
        totals.update(c)
    removed = decisions.status != KEPT
    groups = np.unique(decisions.group[removed]).size
    return {
        "rows_in": totals["rows_in"],
        "rows_out": totals["rows_out"],
        "exact": totals["exact"],
        "near": totals["near"],
        "removed_share": _share(totals["exact"] + totals["near"], totals["rows_in"]),
        "duplicate_groups": int(groups),
        "sources": {
            source: {**c, "removed_share": _share(c["exact"] + c["near"], c["rows_in"])}
            for source, c in counts.items()
        },
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0
