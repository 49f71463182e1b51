"""Label models: majority vote and the Dawid-Skene models from crowd-kit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene, MajorityVote

from datakiln.label.models import LearnedModel, Majority, _long_votes, fit_model

RNG = np.random.default_rng(3)


def noisy_votes(
    rows: int, functions: int, labels: int, right: float
) -> tuple[np.ndarray, np.ndarray]:
    """Votes of functions that abstain half the time and are right `right` of it."""
    truth = RNG.integers(0, labels, rows)
    wrong = (truth[:, None] + RNG.integers(1, labels, (rows, functions))) % labels
    votes = np.where(RNG.random((rows, functions)) < right, truth[:, None], wrong)
    votes = np.where(RNG.random((rows, functions)) < 0.5, -1, votes)
    return votes.astype(np.int16), truth


def test_majority_agrees_with_crowdkit_majority_vote() -> None:
    votes, _ = noisy_votes(2_000, 5, 3, right=0.7)
    draws = RNG.integers(0, 2**63, len(votes)).astype(np.uint64)

    codes, confidence = Majority(3).predict(votes, draws)

    probas = MajorityVote().fit_predict_proba(_long_votes(votes))
    rows = probas.index.to_numpy()
    top = probas.to_numpy().max(axis=1)
    untied = (probas.to_numpy() == top[:, None]).sum(axis=1) == 1
    labels = probas.columns.to_numpy()[probas.to_numpy().argmax(axis=1)]
    assert np.array_equal(codes[rows[untied]], labels[untied])
    assert np.allclose(confidence[rows], top)
    voted_on = np.zeros(len(votes), bool)
    voted_on[rows] = True
    assert (codes[~voted_on] == -1).all() and np.isnan(confidence[~voted_on]).all()


def test_majority_breaks_ties_by_the_row_draw_among_tied_labels_only() -> None:
    votes = np.tile(np.array([[0, 2, -1]], dtype=np.int16), (400, 1))
    draws = np.arange(400, dtype=np.uint64) * np.uint64(7919)

    codes, confidence = Majority(3, "random").predict(votes, draws)
    again, _ = Majority(3, "random").predict(votes, draws)

    assert set(codes.tolist()) == {0, 2}
    assert 0.35 < (codes == 0).mean() < 0.65
    assert np.array_equal(codes, again)
    assert np.allclose(confidence, 0.5)


def test_majority_abstains_on_ties_when_asked() -> None:
    votes = np.array([[0, 1], [1, 1], [-1, -1]], dtype=np.int16)

    codes, confidence = Majority(2, "abstain").predict(votes, np.zeros(3, np.uint64))

    assert codes.tolist() == [-1, 1, -1]
    assert confidence[1] == 1.0 and np.isnan(confidence[[0, 2]]).all()


def test_dawid_skene_predicts_what_crowdkit_fits() -> None:
    votes, _ = noisy_votes(3_000, 6, 3, right=0.75)

    model = LearnedModel.fit("dawid_skene", votes, 3)
    codes, confidence = model.predict(votes)

    crowdkit = DawidSkene(n_iter=100).fit(_long_votes(votes))
    rows = crowdkit.labels_.index.to_numpy()
    assert (codes[rows] == crowdkit.labels_.to_numpy()).mean() > 0.99
    assert np.allclose(confidence[rows], crowdkit.probas_.max(axis=1), atol=0.02)


def test_dawid_skene_learns_from_gold_which_function_to_trust() -> None:
    # Function 0 always votes the truth; functions 1 and 2 always vote the
    # other label. Majority follows the two; gold on half the rows teaches
    # Dawid-Skene that function 0 is the one that is right.
    truth = RNG.integers(0, 2, 1_000)
    votes = np.stack([truth, 1 - truth, 1 - truth], axis=1).astype(np.int16)
    gold = np.where(np.arange(1_000) < 500, truth, -1)

    codes, _ = fit_model("dawid_skene", votes, 2, gold=gold).predict(votes)
    majority, _ = fit_model("majority", votes, 2).predict(
        votes, np.zeros(1_000, np.uint64)
    )

    held_out = slice(500, None)
    assert (codes[held_out] == truth[held_out]).all()
    assert (majority[held_out] != truth[held_out]).all()


def test_gold_a_function_never_voted_is_left_out_of_the_fit() -> None:
    votes = np.array([[0], [0], [1], [-1]], dtype=np.int16)
    gold = np.array([0, 2, 1, 2])

    codes, _ = LearnedModel.fit("dawid_skene", votes, 3, gold=gold).predict(votes)

    assert codes.tolist() == [0, 0, 1, -1]


def test_one_coin_trusts_the_functions_that_agree() -> None:
    truth = RNG.integers(0, 3, 2_000)
    random = RNG.integers(0, 3, 2_000)
    votes = np.stack([truth, truth, random], axis=1).astype(np.int16)
    votes[::2, 0] = -1

    codes, confidence = fit_model("one_coin_dawid_skene", votes, 3).predict(votes)

    assert (codes == truth).mean() > 0.99
    assert ((confidence > 0) & (confidence <= 1)).all()


def test_learned_model_of_no_votes_labels_nothing() -> None:
    votes = np.full((3, 2), -1, dtype=np.int16)

    codes, confidence = LearnedModel.fit("dawid_skene", votes, 4).predict(votes)

    assert codes.tolist() == [-1, -1, -1] and np.isnan(confidence).all()


def test_unknown_learned_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown learned model 'glad'"):
        LearnedModel.fit("glad", np.zeros((1, 1), np.int16), 2)


def test_long_votes_leave_out_abstentions() -> None:
    long = _long_votes(np.array([[1, -1], [-1, 0]], dtype=np.int16))

    assert long.to_dict("records") == [
        {"task": 0, "worker": 0, "label": 1},
        {"task": 1, "worker": 1, "label": 0},
    ]
    assert isinstance(long, pd.DataFrame)
