"""Stage `dedup`: remove exact and near duplicate records.

Texts are compared in their comparison form (`comparison_key`: NFKC, case
folded, whitespace collapsed). A record whose comparison form was seen before
is an exact duplicate of the first record that had it; the patterns declared
in `exact_ignore` (clean's url token, say) are removed from the text for this
comparison only. The others are near-duplicate candidates: a MinHash of their
word shingles is looked up in a MinHash LSH index of all earlier texts
(datasketch), which proposes the texts likely to be similar. A record whose
Jaccard similarity of shingles to a proposed earlier kept record reaches
`threshold` is a near duplicate of the most similar one (the earliest on a
tie). The similarity is computed on the shingles themselves (as 32-bit hashes),
not estimated from the MinHash, so it does not depend on `num_perm`; `num_perm`
only decides how reliably LSH proposes the similar texts.

Records are read in the order of the table, batch by batch, and each is
compared only with earlier ones, so the first record of each group is kept and
the same input always keeps the same records. This is the one global step of
the pipeline: the index of earlier texts must see the whole table. It holds the
LSH bands and the shingle hashes of each distinct text, and nothing else of the
records; the table is read a second time to write the results.

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
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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
# Keys per signing task: small enough to spread one batch over the workers.
SIGN_CHUNK_ROWS = 1_000
KEPT, EXACT, NEAR = 0, 1, 2
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
REJECT_COLUMNS = [
    ("reject_stage", pa.string()),
    ("reject_reason", pa.string()),
    ("reject_detail", pa.string()),
    ("duplicate_of", pa.string()),
    ("similarity", pa.float64()),
    ("dup_group", pa.string()),
]
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


@dataclass
class Signatures:
    """What near-duplicate detection needs of a batch of comparison keys."""

    # One row of MinHash values (datasketch) per key.
    minhashes: np.ndarray
    # The sorted distinct 32-bit hashes of each key's shingles, concatenated:
    # key i has shingles[offsets[i]:offsets[i + 1]], none if it has no words.
    shingles: np.ndarray
    offsets: np.ndarray

    def of(self, row: int) -> np.ndarray:
        return self.shingles[self.offsets[row] : self.offsets[row + 1]]

    @classmethod
    def join(cls, parts: list[Signatures], conf: DedupConf) -> Signatures:
        """The signatures of consecutive chunks of keys, as one."""
        if not parts:
            empty = np.zeros((0, conf.num_perm), dtype=np.uint64)
            return cls(empty, np.empty(0, np.uint32), np.zeros(1, np.int64))
        if len(parts) == 1:
            return parts[0]
        starts = np.cumsum([0] + [p.shingles.size for p in parts[:-1]])
        offsets = [np.zeros(1, np.int64)] + [
            p.offsets[1:] + start for p, start in zip(parts, starts, strict=True)
        ]
        return cls(
            np.vstack([p.minhashes for p in parts]),
            np.concatenate([p.shingles for p in parts]),
            np.concatenate(offsets),
        )


def signatures(keys: Sequence[str], conf: DedupConf) -> Signatures:
    """The shingle hashes and MinHash of each comparison key.

    A pure function of its arguments, so it can run in another process.
    """
    # CRC-32 tells shingles apart, which is all MinHash asks of its base hash:
    # the seeded permutations datasketch applies to it do the rest, and it is
    # much faster than datasketch's default, SHA-1.
    hashed = [sorted({zlib.crc32(s) for s in shingles(k, conf.shingle)}) for k in keys]
    sizes = np.fromiter((len(h) for h in hashed), dtype=np.int64, count=len(keys))
    values = np.zeros((len(keys), conf.num_perm), dtype=np.uint64)
    minhashes = MinHash.generator(
        [h for h in hashed if h],
        num_perm=conf.num_perm,
        seed=conf.seed,
        hashfunc=int,
        permutations=_permutations(conf.num_perm, conf.seed),
    )
    for row, minhash in zip(np.flatnonzero(sizes), minhashes, strict=True):
        values[row] = minhash.hashvalues
    flat = np.fromiter((v for h in hashed for v in h), dtype=np.uint32)
    return Signatures(values, flat, np.concatenate([[0], np.cumsum(sizes)]))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct values."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


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
        self._shingles: dict[int, np.ndarray] = {}
        self._ignore: re.Pattern[str] | None = None
        if conf.exact_ignore:
            either = "|".join(f"(?:{p})" for p in conf.exact_ignore)
            self._ignore = re.compile(either)
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
        self.index(batch, signatures(batch.keys, self.conf))

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
                digest = hashlib.blake2b(
                    self._exact_key(text, key).encode(), digest_size=16
                ).digest()
                first = self._first_by_key.setdefault(digest, pos)
                if first != pos:
                    self._mark(pos, EXACT, first, 1.0)
                    batch.exact.append(pos)
                    continue
            if self._lsh is not None:
                batch.positions.append(pos)
                batch.keys.append(key)
        return batch

    def _exact_key(self, text: str, key: str) -> str:
        # Removed as in the user's text (before case folding), with a space so
        # that the words either side stay apart.
        if self._ignore is None:
            return key
        return comparison_key(self._ignore.sub(" ", text))

    def index(self, batch: _Batch, signed: Signatures) -> None:
        """Decide the near duplicates of a prepared batch, given its signatures."""
        if self._lsh is not None:
            self._index(self._lsh, batch, signed)
        # A copy of a record removed as a near duplicate duplicates the same
        # kept record, with the same similarity.
        for pos in batch.exact:
            first = self._match[pos]
            if self._status[first] == NEAR:
                self._status[pos] = NEAR
                self._match[pos] = self._match[first]
                self._similarity[pos] = self._similarity[first]

    def _index(self, lsh: MinHashLSH, batch: _Batch, signed: Signatures) -> None:
        conf = self.conf
        for row in np.flatnonzero(np.diff(signed.offsets)).tolist():
            pos = batch.positions[row]
            own = signed.of(row)
            minhash = LeanMinHash(seed=conf.seed, hashvalues=signed.minhashes[row])
            best, best_similarity = -1, -1.0
            for other in sorted(lsh.query(minhash)):
                similarity = jaccard(own, self._shingles[other])
                if similarity < conf.threshold:
                    continue
                self._edges[0].append(pos)
                self._edges[1].append(other)
                if self._status[other] == KEPT and similarity > best_similarity:
                    best, best_similarity = other, similarity
            if best >= 0:
                self._mark(pos, NEAR, best, best_similarity)
            lsh.insert(pos, minhash, check_duplication=False)
            self._shingles[pos] = own

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
        columns = [
            [STAGE] * len(of),
            reasons,
            details,
            of,
            similarity,
            np.array(group, dtype=object)[removed],
        ]
        for (name, type_), values in zip(REJECT_COLUMNS, columns, strict=True):
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
    for i, pattern in enumerate(conf.exact_ignore):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{where}.exact_ignore[{i}]': {pattern!r} is not a regular "
                f"expression ({exc}). Fix it, then run `datakiln compose`."
            ) from None
        if compiled.fullmatch(""):
            raise ConfigError(
                f"{where}.exact_ignore[{i}]': {pattern!r} matches the empty text; "
                f"expected a pattern that needs at least one character. Fix it, "
                f"then run `datakiln compose`."
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


def _check_columns(path: Path, schema: pa.Schema, column: str, dataset: str) -> None:
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


def _batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    yield from read_arrow_batches(path, BATCH_ROWS, columns=columns)


def decide(
    dedup: Deduplicator,
    batches: Iterable[pa.RecordBatch],
    workers: int = 0,
    chunk_rows: int = SIGN_CHUNK_ROWS,
) -> None:
    """Feed `batches` to `dedup` in table order.

    With `workers`, worker processes compute the signatures (shingles and
    MinHash, the costly half for long texts) in chunks of `chunk_rows`, while
    this process decides exact duplicates and indexes earlier batches (the
    costly half for short texts). Batches are still indexed in table order, so
    the result is the same as without workers.
    """
    column = dedup.conf.column
    if workers < 1 or not dedup.conf.near:
        for batch in batches:
            dedup.add(*_columns(batch, column))
        return
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, context, initializer=_ignore_sigint)
    pending: deque[tuple[_Batch, list[Future[Signatures]]]] = deque()
    try:
        for batch in batches:
            prepared = dedup.prepare(*_columns(batch, column))
            keys = prepared.keys
            chunks = [keys[i : i + chunk_rows] for i in range(0, len(keys), chunk_rows)]
            futures = [pool.submit(signatures, chunk, dedup.conf) for chunk in chunks]
            pending.append((prepared, futures))
            # Index as soon as the workers have enough queued to stay busy.
            while len(pending) > workers:
                _index_next(dedup, pending)
        while pending:
            _index_next(dedup, pending)
    finally:
        # On Ctrl-C or an error, drop the queued chunks instead of computing them.
        pool.shutdown(cancel_futures=True)


def _index_next(
    dedup: Deduplicator, pending: deque[tuple[_Batch, list[Future[Signatures]]]]
) -> None:
    prepared, futures = pending.popleft()
    dedup.index(prepared, Signatures.join([f.result() for f in futures], dedup.conf))


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

    rows = count_rows(source)
    dedup = Deduplicator(conf)
    batches = progress(
        _batches(source, ["record_id", "source_name", conf.column]),
        math.ceil(rows / BATCH_ROWS),
        f"dedup@{ctx.dataset}",
        "batches",
    )
    decide(dedup, batches, workers=_workers() if rows > SIGN_CHUNK_ROWS else 0)
    decisions = dedup.decisions()
    counts = decisions.counts()
    check_guard(counts, conf, ctx.dataset)

    _write(ctx, source, schema, decisions)
    metrics = _metrics(counts, decisions)
    ctx.write_metrics(metrics)
    logger.info(
        "dedup@%s: %d of %d records kept; %d exact and %d near duplicates removed",
        ctx.dataset,
        metrics["rows_out"],
        metrics["rows_in"],
        metrics["exact"],
        metrics["near"],
    )


def _write(
    ctx: StageContext, source: Path, schema: pa.Schema, decisions: Decisions
) -> None:
    """Read the input again and write what `decisions` keeps and removes."""
    kept_schema = schema.append(pa.field("dup_group", pa.string()))
    rejects_schema = schema
    for name, type_ in REJECT_COLUMNS:
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


def _workers() -> int:
    """Signing workers: one per core when there is more than one, and fork (a
    spawned worker would spend longer importing than it saves)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if cores < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return cores


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
