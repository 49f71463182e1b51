"""Seeded random draws per record, from its stable id alone.

A record's draws depend only on its `record_id` and the seed, never on its
batch or position, so the holdout rows and the broken ties are the same
however the table is batched or partitioned.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def record_draws(ids: pd.Series, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent draws per record id: a float in [0, 1) and a uint64.

    The float decides whether a record is held out (draw < share); the
    integer picks among tied labels.
    """
    key = seed.to_bytes(16, "little", signed=True)
    digests = b"".join(
        hashlib.blake2b(str(record).encode(), digest_size=16, key=key).digest()
        for record in ids.tolist()
    )
    pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    uniform = (pairs[:, 0] >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform, pairs[:, 1].copy()
