"""Seeded per-record draws: from the record id alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from datakiln.label.draws import record_draws

IDS = pd.Series([f"r{i}" for i in range(20_000)])


def test_draws_depend_on_the_id_not_the_batch() -> None:
    whole_u, whole_t = record_draws(IDS, seed=7)
    part_u, part_t = record_draws(IDS.iloc[100:110].reset_index(drop=True), seed=7)

    assert np.array_equal(whole_u[100:110], part_u)
    assert np.array_equal(whole_t[100:110], part_t)


def test_another_seed_draws_differently() -> None:
    u7, _ = record_draws(IDS, seed=7)
    u8, _ = record_draws(IDS, seed=8)

    assert (u7 != u8).mean() > 0.99


def test_uniform_draws_hold_out_about_the_share_asked() -> None:
    uniform, ties = record_draws(IDS, seed=7)

    assert uniform.min() >= 0 and uniform.max() < 1
    assert abs((uniform < 0.2).mean() - 0.2) < 0.02
    assert ties.dtype == np.uint64
    # the tie draw is not the holdout draw in disguise
    assert abs(np.corrcoef(uniform, ties.astype(float))[0, 1]) < 0.05


def test_no_ids_no_draws() -> None:
    uniform, ties = record_draws(pd.Series([], dtype=object), seed=7)

    assert uniform.shape == (0,) and ties.shape == (0,)
