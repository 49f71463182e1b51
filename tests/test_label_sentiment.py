"""VADER scores, with the texts it cannot score skipped, equal VADER's own."""

from __future__ import annotations

import pandas as pd

from datakiln.label.sentiment import analyzer, compound_scores, may_score

# Texts that exercise each rule that could make a skipped text non-zero.
TEXTS = [
    "A table and a chair.",
    "Good.",
    "GOOD news!!!",
    "not bad",
    "no problems at all",
    "kind of nice",
    "It was okay, but terrible in the end",
    ":) see you",
    "the shit",
    "\U0001f600 morning",  # an emoji VADER reads as words
    "café \u00e9t\u00e9 \u2014 \u00abquoted\u00bb",
    "'happy'",
    "(love)",
    "ok?",
    "<url> <url>",
    "",
    "   ",
]


def test_compound_scores_equal_vader_on_every_text() -> None:
    vader = analyzer()

    got = compound_scores(pd.Series(TEXTS)).tolist()

    assert got == [vader.polarity_scores(text)["compound"] for text in TEXTS]


def test_only_texts_without_lexicon_words_or_emoji_are_skipped() -> None:
    vader = analyzer()

    skipped = [text for text in TEXTS if not may_score(text, vader)]

    assert skipped == [TEXTS[0], TEXTS[10], "<url> <url>", "", "   "]
    assert all(vader.polarity_scores(t)["compound"] == 0 for t in skipped)


def test_null_texts_have_no_score() -> None:
    scores = compound_scores(pd.Series(["good", None], index=[5, 6]))

    assert scores.index.tolist() == [5, 6]
    assert scores.iloc[0] > 0
    assert pd.isna(scores.iloc[1])
