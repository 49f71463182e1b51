"""Progress for long loops: a bar on a terminal, sparse 'n of m' lines in CI."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

logger = logging.getLogger(__name__)


def progress(
    items: Iterable[T], total: int | None, desc: str, unit: str = "rows"
) -> Iterator[T]:
    """Iterate `items`, showing progress without flooding a CI log."""
    if sys.stderr.isatty() and logger.isEnabledFor(logging.INFO):
        yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False)
        return
    step = max(1, (total or 0) // 4)
    for n, item in enumerate(items, start=1):
        if total and (n % step == 0 or n == total):
            logger.info("%s: %d of %d %s", desc, n, total, unit)
        yield item
