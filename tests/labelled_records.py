"""Labelled records as the label stage writes them, for the validate, split and
publish tests (which run before the real upstream stages land in a test)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakiln.stage import StageContext

# The type of conftest's `make_context` fixture.
MakeContext = Callable[..., StageContext]

DECLARATION: dict[str, Any] = {
    "description": "Short reviews, labelled by mood.",
    "sources": [{"name": "reviews", "path": "data/raw/sample/reviews.csv"}],
    "schema": {
        "text": {"type": "string", "nullable": False},
        "score": {"type": "float64"},
    },
    "label": {
        "tasks": [
            {
                "name": "mood",
                "labels": ["good", "bad"],
                "functions": [
                    {
                        "name": "praise",
                        "kind": "keywords",
                        "label": "good",
                        "keywords": ["great"],
                    }
                ],
            }
        ]
    },
    "split": {"seed": 42, "stratify": "mood"},
    "publish": {"target": "local", "license": "CC0-1.0"},
}


def declaration(**sections: Any) -> dict[str, Any]:
    """The sample declaration with some sections replaced."""
    decl = copy.deepcopy(DECLARATION)
    decl.update(sections)
    return decl


def records(n: int, labels: tuple[str | None, ...] = ("good", "bad")) -> pd.DataFrame:
    """`n` distinct labelled records, labels taken in turn from `labels`."""
    ids = [f"r{i}" for i in range(n)]
    mood = [labels[i % len(labels)] for i in range(n)]
    return pd.DataFrame(
        {
            "record_id": ids,
            "source_name": "reviews",
            "source_file": "reviews.csv",
            "source_row": pd.Series(range(2, n + 2), dtype="int64"),
            "text": [f"review number {i}" for i in range(n)],
            "score": [float(i % 5) for i in range(n)],
            "dup_group": ids,
            "mood": mood,
            "mood_confidence": [None if m is None else 1.0 for m in mood],
            "mood_votes": [[] if m is None else [m] for m in mood],
        }
    )


def grouped_records(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Records in duplicate groups of 1 to 3 rows: `sizes` is rows per label."""
    frames = []
    for label, rows in sizes.items():
        frame = records(rows, (label,))
        frame["record_id"] = [f"{label}-{i}" for i in range(rows)]
        frame["text"] = [f"{label} review {i}" for i in range(rows)]
        # groups of 1, 2 and 3 rows in turn: members point at the first row
        starts, i, size = [], 0, 1
        while i < rows:
            starts += [i] * min(size, rows - i)
            i += size
            size = size % 3 + 1
        frame["dup_group"] = [f"{label}-{s}" for s in starts]
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    return merged.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_labelled(ctx: StageContext, frame: pd.DataFrame) -> None:
    path = ctx.paths.table("label")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
