"""Labelling functions: each reads a batch of records and votes a label or abstains.

A function is declared in YAML (`LabelFunctionConf`) and compiled here once, at
start-up, so that a bad declaration (an unknown kind, a regex that does not
compile, an import path that does not resolve, a label the task does not
declare) stops the stage before it reads any data, naming the dotted key.
Applying a compiled function is a pure step on one batch: a DataFrame in, a
Series of labels out, null where the function abstains.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datakiln.config import LabelFunctionConf
from datakiln.errors import DatakilnError
from datakiln.label.declaration import Where
from datakiln.label.sentiment import compound_scores

KINDS = ("keywords", "regex", "lookup", "sentiment", "metadata", "python")

# The keys each kind reads besides `name` and `kind`; any other key set to a
# value is a mistake worth stopping for (a `pattern` on a keywords function).
KIND_KEYS = {
    "keywords": ("label", "column", "keywords", "min_matches"),
    "regex": ("label", "column", "pattern", "min_matches"),
    "lookup": ("column", "table", "extract", "pattern"),
    "sentiment": ("column", "positive_above", "negative_below"),
    "metadata": ("column", "table"),
    "python": ("function",),
}

EXTRACTS = ("domain",)
SENTIMENT_LABELS = ("negative", "neutral", "positive")

# A URL's host: after the scheme, up to the path, query, fragment or port.
URL_HOST = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([^/\s?#:]+)")

WORD = re.compile(r"\w+")


class Batch:
    """One batch of records as the functions see it, with work they share.

    Several keywords functions often read the same column; the column is
    split into lower-cased word counts once per batch, not once per function.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._words: dict[str, list[Counter[str] | None]] = {}

    def hiding(self, column: str, hidden: np.ndarray) -> Batch:
        """This batch with `column` blanked on the `hidden` rows; the work
        already shared on other columns is kept."""
        frame = self.frame.copy()
        # As objects, so that blanking leaves integers integers.
        frame[column] = frame[column].astype(object).where(~hidden, None)
        other = Batch(frame)
        other._words = {k: v for k, v in self._words.items() if k != column}
        return other

    def words(self, column: str) -> list[Counter[str] | None]:
        """Per row, how often each lower-cased word occurs in `column`."""
        if column not in self._words:
            self._words[column] = [
                Counter(WORD.findall(text.lower())) if isinstance(text, str) else None
                for text in self.frame[column].tolist()
            ]
        return self._words[column]


Apply = Callable[[Batch], pd.Series]


class VoteError(DatakilnError):
    """A labelling function voted something its task cannot hold."""


@dataclass(frozen=True)
class LabellingFunction:
    name: str
    kind: str
    # The columns the function reads; None when it reads the whole batch.
    columns: tuple[str, ...] | None
    # Every label it can vote, where that is known before it runs.
    labels: tuple[str, ...]
    apply: Apply
    where: Where

    def __call__(self, batch: Batch | pd.DataFrame) -> pd.Series:
        """The function's vote per row of the batch: a label, or None."""
        if isinstance(batch, pd.DataFrame):
            batch = Batch(batch)
        return abstain_blanks(self.apply(batch), batch.frame.index)


def compile_function(
    conf: LabelFunctionConf, task_labels: Iterable[str], where: Where
) -> LabellingFunction:
    """Check one declaration and turn it into a callable labelling function."""
    if conf.kind not in KINDS:
        raise where.error("kind", f"unknown kind '{conf.kind}'; use one of {KINDS}")
    _check_unused_keys(conf, where)

    builders = {
        "keywords": _keywords,
        "regex": _regex,
        "lookup": _lookup,
        "sentiment": _sentiment,
        "metadata": _metadata,
        "python": _python,
    }
    function = builders[conf.kind](conf, where)
    allowed = set(task_labels)
    for label in function.labels:
        if label in allowed:
            continue
        if conf.kind == "sentiment":
            raise where.error(
                "kind",
                f"a sentiment function votes {', '.join(SENTIMENT_LABELS)}, and "
                f"'{label}' is not one of the task's labels {sorted(allowed)}; "
                f"declare all three in the task's `labels`",
            )
        key = "label" if conf.kind in ("keywords", "regex") else "table"
        raise where.error(
            key,
            f"label '{label}' is not one of the task's labels "
            f"{sorted(allowed)}; add it to the task's `labels` or fix the label",
        )
    return function


def abstain_blanks(votes: Any, index: pd.Index) -> pd.Series:
    """Votes as an object Series on `index`: None for null, NaN and ''."""
    values = pd.Series(votes).to_numpy(dtype=object, copy=True)
    if len(values) != len(index):
        raise ValueError(f"{len(values)} votes for a batch of {len(index)} rows")
    blank = pd.isna(values)
    values[blank] = None
    values[values == ""] = None
    return pd.Series(values, index=index, dtype=object)


# ------------------------------------------------------------------ the kinds


def _keywords(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    label = _required_label(conf, where)
    if not conf.keywords:
        raise where.error("keywords", "a keywords function needs a list of keywords")
    for i, word in enumerate(conf.keywords):
        if not word.strip():
            raise where.error(f"keywords[{i}]", "a keyword is empty")
    if conf.min_matches < 1:
        raise where.error("min_matches", f"must be 1 or more, found {conf.min_matches}")

    # Single words are counted from the batch's shared word counts; phrases and
    # keywords with other characters (#nhs, U.S.) by a regular expression.
    words = sorted(
        {w.strip().lower() for w in conf.keywords if WORD.fullmatch(w.strip())}
    )
    others = [w for w in conf.keywords if not WORD.fullmatch(w.strip())]
    phrases = keyword_pattern(others) if others else None
    column, least = conf.column, conf.min_matches

    def apply(batch: Batch) -> pd.Series:
        hits = np.zeros(len(batch.frame), dtype=np.int64)
        if words:
            hits += np.fromiter(
                (sum(c[w] for w in words) if c else 0 for c in batch.words(column)),
                dtype=np.int64,
                count=len(hits),
            )
        if phrases is not None:
            hits += count_matches(batch.frame[column], phrases)
        return _vote_where(hits >= least, label, batch.frame.index)

    return LabellingFunction(conf.name, conf.kind, (column,), (label,), apply, where)


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    """Match any keyword as a whole word or phrase, ignoring case.

    A keyword may begin or end with a non-word character (`@cnn`, `#nhs`); it
    must not be glued to a letter or digit on either side. The words of a
    phrase may be separated by any run of whitespace.
    """
    pieces = sorted({word.strip() for word in keywords}, key=len, reverse=True)
    escaped = [r"\s+".join(re.escape(part) for part in p.split()) for p in pieces]
    return re.compile(r"(?<!\w)(?:" + "|".join(escaped) + r")(?!\w)", re.IGNORECASE)


def _regex(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    label = _required_label(conf, where)
    if not conf.pattern:
        raise where.error("pattern", "a regex function needs a pattern")
    return _matching(conf, label, _compile(conf.pattern, where), where)


def _matching(
    conf: LabelFunctionConf, label: str, pattern: re.Pattern[str], where: Where
) -> LabellingFunction:
    if conf.min_matches < 1:
        raise where.error("min_matches", f"must be 1 or more, found {conf.min_matches}")
    column, least = conf.column, conf.min_matches

    def apply(batch: Batch) -> pd.Series:
        hits = count_matches(batch.frame[column], pattern)
        return _vote_where(hits >= least, label, batch.frame.index)

    return LabellingFunction(conf.name, conf.kind, (column,), (label,), apply, where)


def count_matches(values: pd.Series, pattern: re.Pattern[str]) -> np.ndarray:
    """How often `pattern` matches in each row; 0 for null."""
    counts = as_text(values).str.count(pattern.pattern, pattern.flags)
    return counts.fillna(0).to_numpy(dtype=np.int64)


def _vote_where(hit: np.ndarray, label: str, index: pd.Index) -> pd.Series:
    votes = np.full(len(index), None, dtype=object)
    votes[hit] = label
    return pd.Series(votes, index=index, dtype=object)


def _lookup(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    if not conf.table:
        raise where.error("table", "a lookup function needs a table of key: label")
    if conf.extract is not None and conf.extract not in EXTRACTS:
        raise where.error(
            "extract",
            f"unknown extract '{conf.extract}'; use one of {EXTRACTS} or null",
        )
    if conf.extract and conf.pattern:
        raise where.error(
            "pattern", "set either `extract: domain` or a `pattern`, not both"
        )
    table = _folded_table(conf.table, where)
    pattern = _compile(conf.pattern, where) if conf.pattern else None
    keys: Callable[[str], Iterator[str]]
    if conf.extract == "domain":
        keys = url_domains
    elif pattern is not None:
        keys = _pattern_keys(pattern)
    else:
        keys = _whole_value
    column = conf.column

    def apply(batch: Batch) -> pd.Series:
        values = batch.frame[column].tolist()
        votes = [_first_hit(value, keys, table) for value in values]
        return pd.Series(votes, index=batch.frame.index, dtype=object)

    labels = tuple(dict.fromkeys(table.values()))
    return LabellingFunction(conf.name, conf.kind, (column,), labels, apply, where)


def url_domains(text: str) -> Iterator[str]:
    """Hosts of the URLs in `text`, each followed by its parent domains.

    A text without `scheme://` is read as one URL without its scheme, as in a
    column of bare links (`bbc.in/1rDOqW0`).
    """
    hosts = URL_HOST.findall(text)
    if not hosts and text.strip() and not any(c.isspace() for c in text.strip()):
        hosts = [text.strip().split("/", 1)[0]]
    for host in hosts:
        labels = host.casefold().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            yield ".".join(labels[i:])


def _pattern_keys(pattern: re.Pattern[str]) -> Callable[[str], Iterator[str]]:
    def keys(text: str) -> Iterator[str]:
        for match in pattern.finditer(text):
            yield (match.group(1) if pattern.groups else match.group(0)).casefold()

    return keys


def _whole_value(text: str) -> Iterator[str]:
    yield text.strip().casefold()


def _first_hit(
    value: Any, keys: Callable[[str], Iterator[str]], table: dict[str, str]
) -> str | None:
    for text in _strings(value):
        for key in keys(text):
            label = table.get(key)
            if label is not None:
                return label
    return None


def _strings(value: Any) -> Iterator[str]:
    """The text in one cell: a string, or each string of a list cell."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple | np.ndarray):
        yield from (item for item in value if isinstance(item, str))
    elif value is not None and not pd.isna(value):
        yield str(value)


def _sentiment(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    if conf.negative_below > conf.positive_above:
        raise where.error(
            "negative_below",
            f"{conf.negative_below} is above positive_above ({conf.positive_above}); "
            f"scores between the two are neutral, so it must be at most that",
        )
    column, low, high = conf.column, conf.negative_below, conf.positive_above

    def apply(batch: Batch) -> pd.Series:
        frame = batch.frame
        scores = compound_scores(frame[column]).to_numpy(dtype=np.float64)
        labels = np.full(len(frame), "neutral", dtype=object)
        labels[scores > high] = "positive"
        labels[scores < low] = "negative"
        labels[np.isnan(scores)] = None
        return pd.Series(labels, index=frame.index, dtype=object)

    return LabellingFunction(
        conf.name, conf.kind, (column,), SENTIMENT_LABELS, apply, where
    )


def _metadata(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    column = conf.column
    table = dict(conf.table)

    def apply(batch: Batch) -> pd.Series:
        values = batch.frame[column].astype("string")
        if table:
            values = values.map(table)
        return pd.Series(values.to_numpy(dtype=object), index=batch.frame.index)

    labels = tuple(dict.fromkeys(table.values()))
    return LabellingFunction(conf.name, conf.kind, (column,), labels, apply, where)


def _python(conf: LabelFunctionConf, where: Where) -> LabellingFunction:
    if not conf.function:
        raise where.error("function", "a python function needs 'package.module:name'")
    target = resolve(conf.function, where)

    def apply(batch: Batch) -> pd.Series:
        frame = batch.frame
        # A shallow copy: columns the function adds stay out of the batch.
        votes = target(frame.copy(deep=False))
        if len(votes) != len(frame):
            raise VoteError(
                f"{where.file}: key '{where.key('function')}': {conf.function} "
                f"returned {len(votes)} votes for a batch of {len(frame)} rows; it "
                f"must return one label or null per row"
            )
        if isinstance(votes, pd.Series):
            votes = votes.to_numpy(dtype=object)
        return pd.Series(votes, index=frame.index, dtype=object)

    return LabellingFunction(conf.name, conf.kind, None, (), apply, where)


def resolve(path: str, where: Where) -> Callable[[pd.DataFrame], Any]:
    """Import "package.module:function" and check it can be called."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise where.error(
            "function", f"'{path}' is not of the form 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise where.error(
            "function",
            f"cannot import module '{module_name}' ({exc}); check the path, and "
            f"that the module is importable from the repo root",
        ) from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise where.error(
                "function", f"module '{module_name}' has no attribute '{attr}'"
            )
        target = getattr(target, part)
    if not callable(target):
        raise where.error("function", f"'{path}' is not callable")
    function: Callable[[pd.DataFrame], Any] = target
    return function


# -------------------------------------------------------------------- helpers


def as_text(values: pd.Series) -> pd.Series:
    """A column as pandas strings, nulls kept, so `.str` methods work on it."""
    if isinstance(values.dtype, pd.StringDtype):
        return values
    return values.astype("string")


def _required_label(conf: LabelFunctionConf, where: Where) -> str:
    if not conf.label:
        raise where.error("label", f"a {conf.kind} function needs the label it votes")
    return conf.label


def _compile(pattern: str, where: Where) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise where.error(
            "pattern", f"regular expression {pattern!r} does not compile: {exc}"
        ) from None


def _folded_table(table: dict[str, str], where: Where) -> dict[str, str]:
    folded: dict[str, str] = {}
    for key, label in table.items():
        fkey = str(key).strip().casefold()
        if folded.get(fkey, label) != label:
            raise where.error(
                f"table.{key}",
                f"'{key}' is also listed, ignoring case, with label '{folded[fkey]}'",
            )
        folded[fkey] = label
    return folded


def _check_unused_keys(conf: LabelFunctionConf, where: Where) -> None:
    used = set(KIND_KEYS[conf.kind]) | {"name", "kind"}
    for spec in dataclasses.fields(LabelFunctionConf):
        if spec.name in used:
            continue
        if spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = spec.default
        if getattr(conf, spec.name) != default:
            raise where.error(
                spec.name,
                f"`{spec.name}` does not apply to a {conf.kind} function, which "
                f"reads {', '.join(KIND_KEYS[conf.kind])}; remove it or change `kind`",
            )
