"""Parquet: values and types as the file stores them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakiln.config import SourceConf
from datakiln.errors import SourceError
from datakiln.readers.base import RawBatch, ReadStats
from datakiln.readers.files import SourceFile

logger = logging.getLogger(__name__)

# Columns pandas adds for a non-default index; they are not data.
PANDAS_INDEX_PREFIX = "__index_level_"


def read_parquet(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    """Record batches of a Parquet file, with the file's column types attached."""
    # Parquet is read from its footer backwards, which archive members and
    # gzip streams do cheaply only from memory.
    stream = file.stream if _seekable(file.stream) else io.BytesIO(file.stream.read())
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"{file.name}: not a readable Parquet file ({exc})."
        ) from None
    stats.encodings["parquet"] += 1
    schema = parquet.schema_arrow
    columns = [n for n in schema.names if not n.startswith(PANDAS_INDEX_PREFIX)]
    types = {name: _value_type(schema.field(name).type) for name in columns}
    row = 0
    for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        frame = pd.DataFrame(
            {
                name: pd.Series(record_batch.column(name).to_pylist(), dtype=object)
                for name in columns
            },
            index=pd.RangeIndex(record_batch.num_rows),
        )
        rows = list(range(row + 1, row + record_batch.num_rows + 1))
        row += record_batch.num_rows
        yield RawBatch(frame, rows, typed=True, arrow_types=types)
    if row == 0:
        yield RawBatch(pd.DataFrame(columns=columns, dtype=object), [], True, [], types)


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except AttributeError:
        # A member of a tar archive read as a stream answers with this.
        return False


def _value_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(arrow_type):
        return arrow_type.value_type
    return arrow_type
