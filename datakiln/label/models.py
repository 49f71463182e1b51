"""Label models: from the votes of a task's functions to one label per record.

Both work on the vote matrix of `tasks.vote` (rows x functions, label codes,
-1 for an abstention) and return a label code per row (-1 where no function
voted) and a confidence in [0, 1] (NaN where there is no label).

- `Majority` is per batch: each row on its own. It counts votes in numpy,
  agreeing with crowd-kit's MajorityVote (a test checks that), because
  importing crowd-kit takes seconds a majority-only dataset need not spend.
- `LearnedModel` learns, for every function, how often it votes each label
  when the true label is each label (its confusion matrix), and the label
  priors, with crowd-kit's Dawid-Skene EM (full or one-coin); each function is
  a "worker" and each record a "task". Fitting needs the votes of all rows
  (the one global step of the label stage); applying the fitted model is per
  batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# Probability given to a (function, vote, true label) never seen in the fit.
FLOOR = 1e-10


def vote_counts(votes: np.ndarray, n_labels: int) -> np.ndarray:
    """Rows x labels: how many functions voted each label on each row."""
    counts = np.zeros((votes.shape[0], n_labels), dtype=np.int32)
    rows = np.arange(votes.shape[0])
    for j in range(votes.shape[1]):
        voted = votes[:, j] >= 0
        np.add.at(counts, (rows[voted], votes[voted, j]), 1)
    return counts


@dataclass(frozen=True)
class Majority:
    """The label most functions voted, with the share of votes it got.

    A tie goes to one of the tied labels picked by the row's seeded draw
    (`random`), or leaves the row unlabelled (`abstain`).
    """

    n_labels: int
    tie_break: str = "random"
    kind: str = "majority"

    def predict(
        self, votes: np.ndarray, tie_draws: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        counts = vote_counts(votes, self.n_labels)
        total = counts.sum(axis=1)
        top = counts.max(axis=1, initial=0)
        tied = (counts == top[:, None]) & (total > 0)[:, None]
        n_tied = tied.sum(axis=1)

        # The k-th of the tied labels, k drawn per row; cumsum finds it.
        k = tie_draws % np.maximum(n_tied, 1).astype(np.uint64)
        chosen = np.argmax(
            np.cumsum(tied, axis=1) > k.astype(np.int64)[:, None], axis=1
        )
        codes = np.where(total > 0, chosen, -1)
        if self.tie_break == "abstain":
            codes = np.where(n_tied > 1, -1, codes)

        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(codes >= 0, top / total, np.nan)
        return codes.astype(np.int16), confidence


LEARNED = ("dawid_skene", "one_coin_dawid_skene")


@dataclass(frozen=True)
class LearnedModel:
    """A fitted Dawid-Skene model, applied to any batch of votes."""

    kind: str
    # log P(true label)
    log_prior: np.ndarray
    # log P(function j votes v | true label c), indexed [j, v, c]
    log_confusion: np.ndarray
    iterations: int

    @classmethod
    def fit(
        cls,
        kind: str,
        votes: np.ndarray,
        n_labels: int,
        gold: np.ndarray | None = None,
        max_iterations: int = 100,
    ) -> LearnedModel:
        """Fit crowd-kit's model `kind` on every row's votes.

        `dawid_skene` learns a full confusion matrix per function. Where a
        row's gold label is known (`gold`: label codes, -1 unknown), crowd-kit
        pins that row to it during EM; pass -1 for rows whose gold must stay
        hidden. crowd-kit models a function's votes, not its abstentions, so a
        function that only ever votes one label tells this model nothing.

        `one_coin_dawid_skene` learns one accuracy per function, which suits
        functions that vote a single label; it fits without gold.
        """
        from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

        n_functions = votes.shape[1]
        long = _long_votes(votes)
        if long.empty:
            return cls.uniform(kind, n_functions, n_labels)
        if kind == "dawid_skene":
            model = DawidSkene(n_iter=max_iterations)
            model.fit(long, true_labels=_known(gold, set(long["label"])))
        elif kind == "one_coin_dawid_skene":
            model = OneCoinDawidSkene(n_iter=max_iterations)
            model.fit(long)
        else:
            raise ValueError(f"unknown learned model {kind!r}; use one of {LEARNED}")

        assert model.priors_ is not None and model.errors_ is not None
        logger.debug(
            "%s: %d votes, %d iterations", kind, len(long), len(model.loss_history_)
        )
        priors = model.priors_.reindex(range(n_labels), fill_value=0.0)
        log_prior = np.log(np.clip(priors.to_numpy(dtype=float), FLOOR, None))
        return cls(
            kind,
            log_prior,
            np.log(_confusion(model.errors_, n_functions, n_labels)),
            len(model.loss_history_),
        )

    @classmethod
    def uniform(cls, kind: str, n_functions: int, n_labels: int) -> LearnedModel:
        """The model of a task on which no function ever voted."""
        flat = -np.log(max(n_labels, 1))
        return cls(
            kind,
            np.full(n_labels, flat),
            np.full((n_functions, n_labels, n_labels), flat),
            0,
        )

    def predict(
        self, votes: np.ndarray, tie_draws: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The most probable label per row and its posterior probability."""
        log_p = np.tile(self.log_prior, (votes.shape[0], 1))
        for j in range(votes.shape[1]):
            voted = votes[:, j] >= 0
            log_p[voted] += self.log_confusion[j, votes[voted, j], :]
        log_p -= log_p.max(axis=1, keepdims=True)
        posterior = np.exp(log_p)
        posterior /= posterior.sum(axis=1, keepdims=True)

        any_vote = (votes >= 0).any(axis=1)
        codes = np.where(any_vote, posterior.argmax(axis=1), -1)
        confidence = np.where(any_vote, posterior.max(axis=1), np.nan)
        return codes.astype(np.int16), confidence


def _confusion(errors: pd.DataFrame, n_functions: int, n_labels: int) -> np.ndarray:
    """crowd-kit's errors_ (index worker, observed label; a column per true
    label) as an array [function, vote, true label], FLOOR where unseen."""
    confusion = np.full((n_functions, n_labels, n_labels), FLOOR)
    workers = errors.index.get_level_values(0).to_numpy(dtype=np.int64)
    observed = errors.index.get_level_values(1).to_numpy(dtype=np.int64)
    true = errors.columns.to_numpy(dtype=np.int64)
    values = np.clip(errors.to_numpy(dtype=np.float64), FLOOR, None)
    confusion[workers[:, None], observed[:, None], true[None, :]] = values
    return confusion


def _long_votes(votes: np.ndarray) -> pd.DataFrame:
    """The vote matrix in crowd-kit's long form: task, worker, label."""
    rows, functions = np.nonzero(votes >= 0)
    return pd.DataFrame(
        {
            "task": rows.astype(np.int64),
            "worker": functions.astype(np.int64),
            "label": votes[rows, functions].astype(np.int64),
        }
    )


def _known(gold: np.ndarray | None, voted: set[int]) -> pd.Series | None:
    """Gold codes crowd-kit can use: known, and a label some function voted.

    crowd-kit can only pin a row to a label that appears among the votes, so
    rows whose gold label no function ever voted are left out of the fit.
    """
    if gold is None:
        return None
    rows = np.flatnonzero(np.isin(gold, list(voted)))
    if rows.size == 0:
        return None
    return pd.Series(gold[rows].astype(np.int64), index=rows.astype(np.int64))


Model = Majority | LearnedModel


def fit_model(
    kind: str,
    votes: np.ndarray,
    n_labels: int,
    tie_break: str = "random",
    gold: np.ndarray | None = None,
) -> Model:
    """The model `kind` for a task, fitted on all its votes where it learns."""
    if kind == "majority":
        return Majority(n_labels, tie_break)
    return LearnedModel.fit(kind, votes, n_labels, gold)
