"""Labelling functions of every kind, and their declarations checked at start-up."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from datakiln.config import LabelConf, LabelFunctionConf
from datakiln.errors import ConfigError
from datakiln.label.declaration import Where
from datakiln.label.functions import (
    Batch,
    LabellingFunction,
    VoteError,
    compile_function,
    url_domains,
)
from datakiln.label.sentiment import analyzer
from datakiln.label.tasks import compile_tasks, vote

WHERE = Where("sample", "label.tasks[0].functions[0]")


def function(labels: list[str], **declared: Any) -> LabellingFunction:
    conf = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(LabelFunctionConf), declared)
    )
    assert isinstance(conf, LabelFunctionConf)
    return compile_function(conf, labels, WHERE)


def votes(fn: LabellingFunction, frame: pd.DataFrame) -> list[str | None]:
    return list(fn(frame))


def label_conf(tasks: list[dict[str, Any]]) -> LabelConf:
    conf = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(LabelConf), {"tasks": tasks})
    )
    assert isinstance(conf, LabelConf)
    return conf


# ------------------------------------------------------------------ keywords


def test_keywords_match_whole_words_ignoring_case() -> None:
    fn = function(
        ["canada"],
        name="c",
        kind="keywords",
        label="canada",
        keywords=["Canada", "Ontario"],
    )
    frame = pd.DataFrame(
        {"text": ["CANADA wins", "in ontario.", "Canadas", "xontario", None, ""]}
    )

    assert votes(fn, frame) == ["canada", "canada", None, None, None, None]


def test_keywords_with_symbols_and_phrases_match_whole() -> None:
    fn = function(
        ["cnn"],
        name="c",
        kind="keywords",
        label="cnn",
        keywords=["@CNN", "#getfit", "Sanjay  Gupta", "U.S."],
    )
    frame = pd.DataFrame(
        {
            "text": [
                "thanks @cnn!",
                "@cnnhealth says",
                "tip #GetFit today",
                "sanjay\ngupta live",
                "the U.S. today",
                "USA",
            ]
        }
    )

    assert votes(fn, frame) == ["cnn", None, "cnn", "cnn", "cnn", None]


def test_keywords_min_matches_counts_every_occurrence() -> None:
    fn = function(
        ["sports"],
        name="s",
        kind="keywords",
        label="sports",
        keywords=["goal", "match", "World Cup"],
        min_matches=3,
    )
    frame = pd.DataFrame(
        {
            "text": [
                "goal goal match",
                "a goal in the match",
                "World Cup: goal, goal",
                "goals goals goals",
            ]
        }
    )

    assert votes(fn, frame) == ["sports", None, "sports", None]


def test_keywords_sharing_a_column_share_its_word_counts() -> None:
    first = function(["a"], name="a", kind="keywords", label="a", keywords=["x"])
    second = function(["b"], name="b", kind="keywords", label="b", keywords=["y"])
    batch = Batch(pd.DataFrame({"text": ["x y", "y"]}))

    assert list(first(batch)) == ["a", None]
    assert list(second(batch)) == ["b", "b"]
    assert list(batch.words("text")[0]) == ["x", "y"]


# --------------------------------------------------------------------- regex


def test_regex_votes_where_the_pattern_is_found() -> None:
    fn = function(
        ["nyt"], name="n", kind="regex", label="nyt", pattern="^(Well|Ask Well):"
    )
    frame = pd.DataFrame({"text": ["Well: sleep", "Ask Well: why", "Oh Well: no"]})

    assert votes(fn, frame) == ["nyt", "nyt", None]


def test_regex_min_matches() -> None:
    fn = function(
        ["x"], name="n", kind="regex", label="x", pattern=r"\d+", min_matches=2
    )
    frame = pd.DataFrame({"text": ["1 and 2", "only 1", None]})

    assert votes(fn, frame) == ["x", None, None]


# -------------------------------------------------------------------- lookup


def test_lookup_domain_matches_host_then_parent_domains() -> None:
    fn = function(
        ["cnn", "bbc"],
        name="d",
        kind="lookup",
        column="link",
        extract="domain",
        table={"cnn.com": "cnn", "BBC.in": "bbc"},
    )
    frame = pd.DataFrame(
        {
            "link": [
                "http://at.cnn.com/x",
                "https://user@WWW.CNN.COM:8080/a?b",
                "bbc.in/1rDOqW0",
                "http://notcnn.com/",
                "http://cnn.com.evil.example/",
                None,
            ]
        }
    )

    assert votes(fn, frame) == ["cnn", "cnn", "bbc", None, None, None]


def test_lookup_domain_reads_list_cells_first_known_url_wins() -> None:
    fn = function(
        ["cnn", "bbc"],
        name="d",
        kind="lookup",
        column="urls",
        extract="domain",
        table={"cnn.it": "cnn", "bbc.in": "bbc"},
    )
    frame = pd.DataFrame(
        {
            "urls": [
                np.array(["http://ow.ly/x", "http://bbc.in/y", "http://cnn.it/z"]),
                ["http://ow.ly/x"],
                [],
                None,
            ]
        }
    )

    assert votes(fn, frame) == ["bbc", None, None, None]


def test_url_domains_of_text_with_urls_in_prose() -> None:
    found = list(url_domains("see http://on.wsj.com/1 and https://n.pr/2 now"))

    assert found == ["on.wsj.com", "wsj.com", "n.pr"]


def test_lookup_pattern_looks_up_first_group_ignoring_case() -> None:
    fn = function(
        ["cnn", "wsj"],
        name="a",
        kind="lookup",
        pattern=r"[@#](\w+)",
        table={"cnn": "cnn", "WSJ": "wsj"},
    )
    frame = pd.DataFrame({"text": ["via @CNN", "#wsj and @cnn", "@nobody"]})

    assert votes(fn, frame) == ["cnn", "wsj", None]


def test_lookup_whole_value() -> None:
    fn = function(["a"], name="w", kind="lookup", column="code", table={"X1": "a"})
    frame = pd.DataFrame({"code": [" x1 ", "X10", None]})

    assert votes(fn, frame) == ["a", None, None]


# ----------------------------------------------------------------- sentiment


def test_sentiment_thresholds_on_vader_compound() -> None:
    fn = function(
        ["negative", "neutral", "positive"],
        name="v",
        kind="sentiment",
        positive_above=0.5,
        negative_below=-0.5,
    )
    texts = [
        "I love this, it is wonderful!",
        "It is good.",
        "Horrible awful death.",
        "A table.",
        None,
    ]
    compound = [analyzer().polarity_scores(t)["compound"] if t else None for t in texts]

    got = votes(fn, pd.DataFrame({"text": texts}))

    expected = [
        None
        if c is None
        else "positive"
        if c > 0.5
        else "negative"
        if c < -0.5
        else "neutral"
        for c in compound
    ]
    assert got == expected
    assert set(got) == {"positive", "neutral", "negative", None}


# ------------------------------------------------------------------ metadata


def test_metadata_takes_the_label_from_a_column() -> None:
    fn = function(["sport", "tech"], name="m", kind="metadata", column="folder")
    frame = pd.DataFrame({"folder": ["sport", "tech", None, ""]})

    assert votes(fn, frame) == ["sport", "tech", None, None]


def test_metadata_maps_values_through_a_table() -> None:
    fn = function(
        ["sport"],
        name="m",
        kind="metadata",
        column="folder",
        table={"rec.sport.hockey": "sport"},
    )
    frame = pd.DataFrame({"folder": ["rec.sport.hockey", "sci.space"]})

    assert votes(fn, frame) == ["sport", None]


# -------------------------------------------------------------------- python


def shouting(batch: pd.DataFrame) -> pd.Series:
    """A python labelling function for the tests below."""
    return batch["text"].map(lambda t: "loud" if t.isupper() else None)


def wrong_length(batch: pd.DataFrame) -> list[str]:
    return ["loud"]


def scribbling(batch: pd.DataFrame) -> pd.Series:
    batch["scratch"] = 1
    return pd.Series([None] * len(batch))


def test_python_function_by_import_path() -> None:
    fn = function(
        ["loud"], name="p", kind="python", function="test_label_functions:shouting"
    )
    frame = pd.DataFrame({"text": ["HEY", "hey"]}, index=[10, 11])

    assert votes(fn, frame) == ["loud", None]
    assert fn.columns is None


def test_python_function_cannot_add_columns_to_the_batch() -> None:
    fn = function(
        ["loud"], name="p", kind="python", function="test_label_functions:scribbling"
    )
    frame = pd.DataFrame({"text": ["a"]})

    fn(frame)

    assert frame.columns.tolist() == ["text"]


def test_python_function_returning_wrong_length_names_it() -> None:
    fn = function(
        ["loud"], name="p", kind="python", function="test_label_functions:wrong_length"
    )

    with pytest.raises(VoteError, match=r"functions\[0\]\.function.*1 votes.*2 rows"):
        fn(pd.DataFrame({"text": ["a", "b"]}))


def test_vote_outside_labels_names_function_record_and_value() -> None:
    conf = label_conf(
        [
            {
                "name": "folder",
                "labels": ["sport"],
                "functions": [{"name": "m", "kind": "metadata", "column": "f"}],
            }
        ]
    )
    (task,) = compile_tasks(conf, "sample")
    frame = pd.DataFrame({"record_id": ["r1", "r2"], "f": ["sport", "misc"]})

    with pytest.raises(VoteError, match=r"'m'.*voted 'misc' for record r2.*labels"):
        vote(frame, task)


# ------------------------------------------------------- bad declarations


def task_with(**function_conf: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "t",
            "labels": ["a", "b"],
            "functions": [{"name": "f"} | function_conf],
        }
    ]


@pytest.mark.parametrize(
    ("declared", "key", "says"),
    [
        ({"kind": "wordlist"}, "kind", "unknown kind 'wordlist'"),
        (
            {"kind": "regex", "label": "a", "pattern": "(unclosed"},
            "pattern",
            "does not compile",
        ),
        (
            {"kind": "python", "function": "no_such_module_here:f"},
            "function",
            "cannot import module 'no_such_module_here'",
        ),
        (
            {"kind": "python", "function": "datakiln.label:nothing"},
            "function",
            "has no attribute 'nothing'",
        ),
        (
            {"kind": "python", "function": "datakiln.label"},
            "function",
            "'package.module:function'",
        ),
        (
            {"kind": "keywords", "label": "c", "keywords": ["x"]},
            "label",
            "label 'c' is not one of",
        ),
        ({"kind": "lookup", "table": {"x.com": "c"}}, "table", "label 'c'"),
        ({"kind": "sentiment"}, "kind", "votes negative, neutral, positive"),
        (
            {"kind": "keywords", "label": "a", "keywords": ["x"], "pattern": "y"},
            "pattern",
            "does not apply to a keywords function",
        ),
        (
            {"kind": "keywords", "label": "a", "keywords": []},
            "keywords",
            "needs a list of keywords",
        ),
        ({"kind": "keywords", "keywords": ["x"]}, "label", "needs the label"),
        (
            {"kind": "lookup", "table": {"a": "a"}, "extract": "host"},
            "extract",
            "unknown extract 'host'",
        ),
        (
            {"kind": "lookup", "table": {"X": "a", "x": "b"}},
            "table.x",
            "also listed, ignoring case",
        ),
        (
            {"kind": "sentiment", "positive_above": -0.5, "negative_below": 0.5},
            "negative_below",
            "is above positive_above",
        ),
        (
            {"kind": "regex", "label": "a", "pattern": "x", "min_matches": 0},
            "min_matches",
            "must be 1 or more",
        ),
    ],
)
def test_bad_function_declaration_fails_with_dotted_key(
    declared: dict[str, Any], key: str, says: str
) -> None:
    conf = label_conf(task_with(**declared))
    dotted = rf"dataset\.sample\.label\.tasks\[0\]\.functions\[0\]\.{key}"
    where = rf"conf/dataset/sample\.yaml: key '{dotted}': "

    with pytest.raises(ConfigError, match=where + ".*" + re.escape(says)):
        compile_tasks(conf, "sample")


def test_error_points_at_the_right_task_and_function() -> None:
    good = {
        "name": "s",
        "labels": ["x"],
        "functions": [
            {"name": "k", "kind": "keywords", "label": "x", "keywords": ["y"]}
        ],
    }
    bad = {
        "name": "t",
        "labels": ["x"],
        "functions": [
            dict(good["functions"][0]),
            {"name": "r", "kind": "regex", "label": "x", "pattern": "[z"},
        ],
    }
    conf = label_conf([good, bad])

    with pytest.raises(
        ConfigError,
        match=r"dataset\.sample\.label\.tasks\[1\]\.functions\[1\]\.pattern",
    ):
        compile_tasks(conf, "sample")


@pytest.mark.parametrize(
    ("task", "key", "says"),
    [
        ({"name": "t", "labels": [], "functions": []}, "labels", "needs the list"),
        (
            {"name": "t", "labels": ["a", "a"], "functions": []},
            r"labels\[1\]",
            "listed twice",
        ),
        ({"name": "t", "labels": ["a"], "functions": []}, "functions", "at least one"),
        (
            {"name": "t", "labels": ["a"], "model": "snorkel", "functions": []},
            "model",
            "unknown model 'snorkel'",
        ),
        (
            {"name": "t", "labels": ["a"], "tie_break": "coin", "functions": []},
            "tie_break",
            "unknown tie_break",
        ),
        (
            {"name": "t", "labels": ["a"], "holdout": 1.0, "functions": []},
            "holdout",
            r"must be in \[0, 1\)",
        ),
        (
            {"name": "my task", "labels": ["a"], "functions": []},
            "name",
            "letters, digits and underscores",
        ),
    ],
)
def test_bad_task_declaration_fails_with_dotted_key(
    task: dict[str, Any], key: str, says: str
) -> None:
    conf = label_conf([task])

    with pytest.raises(ConfigError, match=rf"label\.tasks\[0\]\.{key}'.*{says}"):
        compile_tasks(conf, "sample")


def test_duplicate_task_and_function_names_fail() -> None:
    fn = {"name": "k", "kind": "keywords", "label": "a", "keywords": ["x"]}
    twice = {"name": "t", "labels": ["a"], "functions": [fn, fn]}

    with pytest.raises(ConfigError, match=r"tasks\[0\]\.functions\[1\]\.name"):
        compile_tasks(label_conf([twice]), "sample")
    once = {"name": "t", "labels": ["a"], "functions": [fn]}
    with pytest.raises(ConfigError, match=r"tasks\[1\]\.name'.*also tasks\[0\]"):
        compile_tasks(label_conf([once, once]), "sample")
