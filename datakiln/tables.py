"""Reading and writing record tables batch by batch, atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def read_batches(path: Path, batch_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Yield a Parquet file as DataFrames of at most `batch_rows` rows."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_rows):
        yield batch.to_pandas()


def read_arrow_batches(
    path: Path, batch_rows: int = 50_000, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield a Parquet file as Arrow record batches, types exactly as stored."""
    parquet = pq.ParquetFile(path)
    yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


def count_rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def read_table(path: Path) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(path).to_pandas()
    return frame


class ParquetSink:
    """Append DataFrames to one Parquet file that appears only when complete.

    The file is written under a temporary name and moved into place on a clean
    exit, so an interrupted stage never leaves a half-written output behind.
    The first batch fixes the schema; an empty sink writes `empty_schema`.
    """

    def __init__(self, path: Path, empty_schema: pa.Schema | None = None) -> None:
        self.path = path
        self.rows = 0
        self._empty_schema = empty_schema
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain
        # open() would, so tables stay readable by whoever may read the folder.
        umask = os.umask(0)
        os.umask(umask)
        self._tmp.chmod(0o666 & ~umask)

    def write(self, frame: pd.DataFrame) -> None:
        self.write_table(pa.Table.from_pandas(frame, preserve_index=False))

    def write_table(self, table: pa.Table) -> None:
        """Append Arrow data as it is: no pandas round trip, so types stay exact."""
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        else:
            assert self._schema is not None
            table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is None:
            schema = self._empty_schema or pa.schema([])
            pq.write_table(schema.empty_table(), self._tmp)
        else:
            self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so diffs stay small."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
