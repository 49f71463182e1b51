"""Stage `clean`: normalise the text columns, then filter records by length and
language.

The text rules are a sequence of `TextStep`s (see `text_steps`), each a pure
function from a Series of texts to a Series of texts. HTML decoding runs once,
on the text as ingested; every other step runs again and again, in order, until
no text changes any more, so cleaning a cleaned text changes nothing whatever
the order in which the rules uncover each other's patterns. A new rewrite of
the text is one more step in that list.

`Cleaner` runs a batch through phases: the text rules, then personal data,
then the filters. A phase may rewrite any column of the kept records or move
records to the rejects (`CleanedBatch.reject`). Personal data (`datakiln.pii`:
masking, pseudonyms, dropping records) comes after the text rules and before
the filters, so that the filters, the rejects and the metrics only ever see
masked text. Its tokens (`<email>`, `<email:3f2a...>`) are neither HTML tags,
URLs nor mentions, and a second search skips them, so cleaning cleaned records
leaves them as they are.

Why HTML decoding runs once: `&amp;amp;` in a source is the escaped form of the
literal text `&amp;`, which must survive. Decoding it a second time would turn
it into `&`. So the decoded text of an entity that itself spells an entity or a
tag is the one case where running clean on its own output would change it.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakiln import pii
from datakiln.config import CleanConf, PiiAction, TokenAction, UnicodeForm
from datakiln.errors import ConfigError, SchemaError, SecretError, SourceError
from datakiln.progress import progress
from datakiln.stage import StageContext
from datakiln.tables import ParquetSink, count_rows, read_arrow_batches

logger = logging.getLogger(__name__)

STAGE = "clean"
BATCH_ROWS = 10_000
REJECT_REASONS = ("missing_text", "too_short", "too_long", "wrong_language")
UNDETERMINED = "und"
# The rewriting steps run until no text changes; real rules settle in two or
# three passes, so reaching this bound means two rules undo each other.
MAX_PASSES = 5
# langid is slow on long texts and needs only a few sentences to be sure.
LANGUAGE_SAMPLE_CHARS = 1_000
PLOT_BINS = 40
# Field metadata of a sensitive column whose values are pseudonyms already, so
# that cleaning cleaned records does not pseudonymise them a second time.
PSEUDONYMISED = {b"datakiln.pii": b"pseudonymised"}

# ------------------------------------------------------------------ characters

# Invisible characters that carry no meaning in a text once it is stored:
# zero-width space, word joiner, BOM (zero-width no-break space), Mongolian
# vowel separator, invisible math operators, soft hyphen, directional marks and
# embeddings. ZWJ (U+200D, emoji sequences, Indic scripts) and ZWNJ (U+200C,
# Persian and other scripts) change how a word is written and are kept.
_INVISIBLE = (
    [0x00AD, 0x061C, 0x180E, 0x200B, 0x200E, 0x200F, 0x2060, 0xFEFF]
    + list(range(0x202A, 0x202F))
    + list(range(0x2061, 0x2065))
    + list(range(0x2066, 0x206A))
)
# Control characters other than whitespace (which is collapsed instead).
_CONTROLS = [c for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace()]
_DELETE = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in _INVISIBLE + _CONTROLS) + "]"
)

# A complete URL ends before trailing punctuation; a URL cut short by a
# retweet ends in an ellipsis, which belongs to it.
_TRUNCATED_URL = r"\bhttps?:?/{0,2}[^\s<>\"…]*…"
_COMPLETE_URL = r"\b(?:https?://|www\.)[^\s<>\"…]*[^\s<>\"….,;:!?'’”)\]}]"
URL_PATTERN = re.compile(f"(?P<cut>{_TRUNCATED_URL})|(?P<url>{_COMPLETE_URL})")
_MENTION = r"(?<![\w@])@\w+"
_URL_OR_MENTION = re.compile(f"(?P<url>{_TRUNCATED_URL}|{_COMPLETE_URL})|{_MENTION}")

# --------------------------------------------------------------------- HTML

# The element names of the HTML standard, with the obsolete ones still found in
# scraped text. Anything else between angle brackets (`<UAL.N>`, `<url>`, `<3`)
# is text.
HTML_ELEMENTS = frozenset(
    """
    a abbr acronym address applet area article aside audio b base basefont bdi
    bdo big blink blockquote body br button canvas caption center cite code col
    colgroup data datalist dd del details dfn dialog dir div dl dt em embed
    fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6
    head header hgroup hr html i iframe img input ins kbd label legend li link
    main map mark marquee math menu meta meter nav nobr noframes noscript object
    ol optgroup option output p param picture pre progress q rp rt ruby s samp
    script search section select slot small source span strike strong style sub
    summary sup svg table tbody td template textarea tfoot th thead time title
    tr track tt u ul var video wbr xmp
    """.split()  # noqa: SIM905 (a block of words reads better than a list)
)
# Tags inside a line of text; every other tag separates words.
_INLINE = frozenset(
    """
    a abbr acronym b bdi bdo big cite code data dfn del em font i ins kbd mark
    nobr q s samp small span strike strong sub sup time tt u var wbr
    """.split()  # noqa: SIM905
)
# Elements whose content is not text.
_HIDDEN = frozenset(["script", "style", "template", "noscript", "head"])


class _TextExtractor(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def _raw_endtag(self, tag: str) -> str:
        # The parser reports end tags in lower case; text keeps its own case.
        line, column = self.getpos()
        start = self._line_starts[line - 1] + column
        end = self._text.find(">", start)
        if self._text.startswith("</", start) and end >= 0:
            return self._text[start : end + 1]
        return f"</{tag}>"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_ELEMENTS:
            self.parts.append(self.get_starttag_text() or "")
        elif tag in _HIDDEN:
            self._hidden += 1
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_ELEMENTS:
            self.parts.append(self.get_starttag_text() or "")
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag not in HTML_ELEMENTS:
            self.parts.append(self._raw_endtag(tag))
        elif tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Decode HTML entities exactly once and drop HTML tags, comments and scripts.

    `&amp;amp;` becomes `&amp;`; `a<br>b` becomes `a b`; `<UAL.N>` stays.
    """
    if "<" not in text:
        return html.unescape(text) if "&" in text else text
    parser = _TextExtractor(text)
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


# -------------------------------------------------------------------- steps

TextFunction = Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class TextStep:
    """One rule of clean: rewrites a Series of texts (no nulls) into another."""

    name: str
    apply: TextFunction
    # Run once on the text as ingested, instead of until the text is stable.
    once: bool = False


def _elementwise(func: Callable[[str], str]) -> TextFunction:
    def apply(texts: pd.Series) -> pd.Series:
        return texts.map(func)

    return apply


def collapse_whitespace(texts: pd.Series) -> pd.Series:
    # str.split() splits on the same Unicode whitespace as `\s`, and faster.
    return texts.map(lambda text: " ".join(text.split()))


def remove_invisible(texts: pd.Series) -> pd.Series:
    return texts.str.replace(_DELETE, "", regex=True)


def _normaliser(form: UnicodeForm) -> TextFunction:
    name: Literal["NFC", "NFKC"] = "NFC" if form is UnicodeForm.NFC else "NFKC"

    def apply(texts: pd.Series) -> pd.Series:
        return texts.str.normalize(name)

    return apply


def _prefix_stripper(patterns: list[str]) -> TextFunction:
    either = "|".join(f"(?:{p})" for p in patterns)
    prefix = re.compile(rf"\A(?:\s*(?:{either}))+")

    def apply(texts: pd.Series) -> pd.Series:
        return texts.str.replace(prefix, "", regex=True)

    return apply


def _url_rewriter(action: TokenAction, token: str) -> TextFunction:
    replacement = token if action is TokenAction.replace else " "

    def apply(texts: pd.Series) -> pd.Series:
        return texts.str.replace(URL_PATTERN, replacement, regex=True)

    return apply


def _mention_rewriter(action: TokenAction, token: str) -> TextFunction:
    replacement = token if action is TokenAction.replace else " "

    # URLs are matched first so that the `@name` in a URL stays part of it.
    def rewrite(match: re.Match[str]) -> str:
        return match.group() if match.group("url") else replacement

    def apply(texts: pd.Series) -> pd.Series:
        return texts.str.replace(_URL_OR_MENTION, rewrite, regex=True)

    return apply


def text_steps(conf: CleanConf) -> list[TextStep]:
    """The rules of `conf` in the order they apply."""
    steps: list[TextStep] = []
    if conf.html:
        steps.append(TextStep("html", _elementwise(strip_html), once=True))
    steps += [
        TextStep("unicode", _normaliser(conf.unicode)),
        TextStep("invisible", remove_invisible),
        TextStep("whitespace", collapse_whitespace),
    ]
    if conf.strip_prefixes:
        steps.append(TextStep("prefixes", _prefix_stripper(conf.strip_prefixes)))
    if conf.urls is not TokenAction.keep:
        steps.append(TextStep("urls", _url_rewriter(conf.urls, conf.url_token)))
    if conf.mentions is not TokenAction.keep:
        steps.append(
            TextStep("mentions", _mention_rewriter(conf.mentions, conf.mention_token))
        )
    # Rules that remove words leave double spaces behind.
    steps.append(TextStep("whitespace", collapse_whitespace))
    return steps


@dataclass
class Rewritten:
    texts: pd.Series
    # The non-null texts after the `once` steps, before the others.
    decoded: pd.Series
    # Step name -> which texts (by position) the step changed.
    changed: dict[str, np.ndarray]
    # Texts still changing after MAX_PASSES (by position).
    unstable: np.ndarray


def rewrite(texts: pd.Series, steps: list[TextStep]) -> Rewritten:
    """Apply `steps` to the non-null `texts`: `once` steps once, the others in
    order until no text changes."""
    texts = texts.reset_index(drop=True)
    changed = {step.name: np.zeros(len(texts), dtype=bool) for step in steps}
    present = texts.notna().to_numpy()
    todo = texts[present].astype(str)

    for step in (s for s in steps if s.once):
        todo = _apply(step, todo, changed)
    decoded = todo

    repeated = [s for s in steps if not s.once]
    result = todo.copy()
    for _ in range(MAX_PASSES):
        before = todo
        for step in repeated:
            todo = _apply(step, todo, changed)
        moved = (todo != before).to_numpy()
        result.loc[todo.index] = todo
        todo = todo[moved]
        if todo.empty:
            break
    unstable = np.zeros(len(texts), dtype=bool)
    unstable[todo.index.to_numpy()] = True

    out = texts.astype(object)
    out.loc[result.index] = result.to_numpy()
    return Rewritten(out, decoded, changed, unstable)


def _apply(
    step: TextStep, texts: pd.Series, changed: dict[str, np.ndarray]
) -> pd.Series:
    after = step.apply(texts)
    diff = (after != texts).to_numpy()
    changed[step.name][texts.index.to_numpy()[diff]] = True
    return after


def clean_text(text: str, conf: CleanConf) -> str:
    """The cleaned form of one text under `conf`: for tests and notebooks."""
    return str(rewrite(pd.Series([text], dtype=object), text_steps(conf)).texts[0])


def find_urls(texts: pd.Series) -> list[list[str]]:
    """The complete URLs of each text, distinct, in order of first appearance."""
    found: list[list[str]] = []
    for text in texts:
        if not isinstance(text, str):
            found.append([])
            continue
        urls = [m.group("url") for m in URL_PATTERN.finditer(text) if m.group("url")]
        found.append(list(dict.fromkeys(urls)))
    return found


# ----------------------------------------------------------------- language


@functools.cache
def _language_model() -> Any:
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def known_languages() -> list[str]:
    return [str(code) for code in _language_model().nb_classes]


def detect_language(text: str) -> str:
    """langid's most likely language of `text` (judged on its first 1,000 chars).

    langid 1.1.6 multiplies a dense feature vector by its whole model, which
    takes milliseconds per text under numpy 2; the same product over the
    features present in the text gives the same scores in microseconds.
    """
    ident = _language_model()
    features = ident.instance2fv(text[:LANGUAGE_SAMPLE_CHARS])
    present = np.flatnonzero(features)
    scores = features[present].astype(np.float32) @ ident.nb_ptc[present]
    return str(ident.nb_classes[int(np.argmax(scores + ident.nb_pc))])


def detect_languages(texts: pd.Series, min_chars: int) -> pd.Series:
    """The language of each text, `und` for texts shorter than `min_chars`."""
    return texts.map(
        lambda t: detect_language(t) if len(t) >= min_chars else UNDETERMINED
    )


# -------------------------------------------------------------------- batch


@dataclass
class CleanedBatch:
    """One batch going through clean: the records kept so far, the records
    rejected so far (as cleaned up to that point) and the counts."""

    kept: pa.Table
    rejected: list[pa.Table] = field(default_factory=list)
    # Reject reason -> records.
    reasons: Counter[str] = field(default_factory=Counter)
    # Step name -> records whose text it changed.
    changed: Counter[str] = field(default_factory=Counter)
    # Language -> kept records (only with a language filter).
    languages: Counter[str] = field(default_factory=Counter)
    # Length in characters of the filter column -> kept records.
    lengths: Counter[int] = field(default_factory=Counter)
    urls: int = 0
    unstable: int = 0
    # Personal data found, by kind and action (never a value).
    pii_counts: pii.PiiCounts = field(default_factory=pii.PiiCounts)

    @property
    def rejects(self) -> pa.Table:
        schema = _rejects_schema(self.kept.schema)
        return pa.concat_tables([schema.empty_table(), *self.rejected])

    def reject(self, mask: np.ndarray, reasons: list[str], details: list[str]) -> None:
        """Move the kept records under `mask` to the rejects."""
        if not mask.any():
            return
        rejected = self.kept.filter(pa.array(mask))
        for name, values in (
            ("reject_stage", [STAGE] * rejected.num_rows),
            ("reject_reason", reasons),
            ("reject_detail", details),
        ):
            rejected = rejected.append_column(name, pa.array(values, pa.string()))
        self.rejected.append(rejected)
        self.reasons.update(reasons)
        self.kept = self.kept.filter(pa.array(~mask))


class Cleaner:
    """The clean stage's transform of one batch, built once from its config: the
    text rules, then personal data, then the length filter, then the language
    filter.

    `pseudonymiser` (from `datakiln.pii.pseudonymiser_for`) is needed when
    clean.pii pseudonymises anything.
    """

    def __init__(
        self, conf: CleanConf, pseudonymiser: pii.Pseudonymiser | None = None
    ) -> None:
        if pii.needs_key(conf.pii) and pseudonymiser is None:
            raise SecretError(
                "clean.pii pseudonymises, so the Cleaner needs a pseudonymiser; "
                "make it with datakiln.pii.pseudonymiser_for(root, conf.pii)"
            )
        self.conf = conf
        self.steps = text_steps(conf)
        self.pseudonymiser = pseudonymiser

    def __call__(self, table: pa.Table) -> CleanedBatch:
        done = _pseudonymised_columns(table.schema)
        batch = CleanedBatch(kept=_with_output_columns(self.conf, table))
        self._rewrite_texts(batch)
        if protects(self.conf):
            self._protect_personal_data(batch, done)
        self._filter_by_length(batch)
        if self.conf.languages:
            self._filter_by_language(batch)
        texts = batch.kept.column(self.conf.filter_column).to_pandas()
        batch.lengths.update(texts.str.len().astype(int).tolist())
        return batch

    def _rewrite_texts(self, batch: CleanedBatch) -> None:
        conf, table = self.conf, batch.kept
        changed = {step.name: np.zeros(table.num_rows, bool) for step in self.steps}
        unstable = np.zeros(table.num_rows, dtype=bool)
        urls: list[list[str]] = [[] for _ in range(table.num_rows)]
        for column in conf.columns:
            result = rewrite(table.column(column).to_pandas(), self.steps)
            for name, mask in result.changed.items():
                changed[name] |= mask
            unstable |= result.unstable
            if conf.urls_column:
                decoded = result.decoded
                for row, found in zip(decoded.index, find_urls(decoded), strict=True):
                    urls[row].extend(found)
            index = table.schema.get_field_index(column)
            values = pa.array(result.texts, type=table.schema.field(index).type)
            table = table.set_column(index, column, values)
        if conf.urls_column:
            table = self._merge_urls(table, conf.urls_column, urls)
        batch.kept = table
        batch.changed.update({name: int(mask.sum()) for name, mask in changed.items()})
        batch.unstable += int(unstable.sum())
        batch.urls += sum(len(u) for u in urls)

    @staticmethod
    def _merge_urls(table: pa.Table, name: str, urls: list[list[str]]) -> pa.Table:
        # When cleaning cleaned records, the URLs an earlier run found stay.
        earlier = table.column(name).to_pylist()
        merged = [
            list(dict.fromkeys([*(e or []), *u]))
            for e, u in zip(earlier, urls, strict=True)
        ]
        index = table.schema.get_field_index(name)
        return table.set_column(index, name, pa.array(merged, pa.list_(pa.string())))

    def _protect_personal_data(self, batch: CleanedBatch, done: set[str]) -> None:
        """Mask, pseudonymise or keep personal data in the searched columns and
        the URLs column; pseudonymise the sensitive columns; move records with
        a `drop` kind to the rejects as pii_<kind>, their text masked."""
        conf, table = self.conf, batch.kept
        searched = searched_columns(conf, table.schema)
        sensitive = [c for c in conf.pii.sensitive_columns if c not in done]
        declared = dataclasses.replace(
            conf.pii, columns=searched, sensitive_columns=sensitive
        )
        frame = table.select([*searched, *sensitive]).to_pandas()
        outcome = pii.apply(frame, declared, searched, self.pseudonymiser)
        for column in [*searched, *sensitive]:
            index = table.schema.get_field_index(column)
            field_ = table.schema.field(index)
            values = pa.Array.from_pandas(outcome.frame[column], type=field_.type)
            table = table.set_column(index, field_, values)
        batch.pii_counts.add(outcome.counts)
        reasons: list[tuple[str, str] | None] = [None] * table.num_rows
        marked = iter(zip(outcome.reasons, outcome.details, strict=True))
        for row in np.flatnonzero(outcome.dropped):
            reasons[row] = next(marked)
        if conf.urls_column:
            table = self._protect_urls(table, conf.urls_column, batch, reasons)
        batch.kept = table
        dropped = [r for r in reasons if r is not None]
        batch.reject(
            np.array([r is not None for r in reasons], dtype=bool),
            [reason for reason, _ in dropped],
            [detail for _, detail in dropped],
        )

    def _protect_urls(
        self,
        table: pa.Table,
        name: str,
        batch: CleanedBatch,
        reasons: list[tuple[str, str] | None],
    ) -> pa.Table:
        # The text rules moved each URL out of the text into this column, where
        # an e-mail address in a link's query (?email=...) would otherwise stay.
        lists = table.column(name).to_pylist()
        rows = [row for row, urls in enumerate(lists) for _ in urls or []]
        if not rows:
            return table
        flat = pd.DataFrame({name: [url for urls in lists for url in urls or []]})
        declared = dataclasses.replace(
            self.conf.pii, columns=[name], sensitive_columns=[]
        )
        outcome = pii.apply(flat, declared, [name], self.pseudonymiser)
        batch.pii_counts.add(outcome.counts)
        masked: list[list[str]] = [[] for _ in lists]
        for row, url in zip(rows, outcome.frame[name], strict=True):
            masked[row].append(url)
        marked = iter(zip(outcome.reasons, outcome.details, strict=True))
        for position in np.flatnonzero(outcome.dropped):
            row = rows[position]
            reason, detail = next(marked)
            reasons[row] = reasons[row] or (reason, detail)
        merged = [
            list(dict.fromkeys(urls)) if old is not None else None
            for urls, old in zip(masked, lists, strict=True)
        ]
        index = table.schema.get_field_index(name)
        field_ = table.schema.field(index)
        return table.set_column(index, field_, pa.array(merged, field_.type))

    def _filter_by_length(self, batch: CleanedBatch) -> None:
        conf = self.conf
        col = conf.filter_column
        found = [
            self._length_problem(text) for text in batch.kept.column(col).to_pylist()
        ]
        mask = np.array([problem is not None for problem in found], dtype=bool)
        problems = [problem for problem in found if problem is not None]
        batch.reject(mask, [r for r, _ in problems], [d for _, d in problems])

    def _length_problem(self, text: str | None) -> tuple[str, str] | None:
        conf = self.conf
        col = conf.filter_column
        if text is None:
            return "missing_text", f"{col} is null"
        n = len(text)
        if n < conf.min_chars:
            return "too_short", (
                f"{col} has {n} characters after cleaning, fewer than "
                f"clean.min_chars {conf.min_chars}: {_preview(text)}"
            )
        if n > conf.max_chars:
            return "too_long", (
                f"{col} has {n} characters after cleaning, more than "
                f"clean.max_chars {conf.max_chars}: {_preview(text)}"
            )
        return None

    def _filter_by_language(self, batch: CleanedBatch) -> None:
        conf = self.conf
        texts = batch.kept.column(conf.filter_column).to_pandas()
        codes = detect_languages(texts, conf.language_min_chars)
        index = batch.kept.schema.get_field_index("language")
        batch.kept = batch.kept.set_column(
            index, "language", pa.array(codes, pa.string())
        )
        allowed = {*conf.languages, UNDETERMINED}
        wrong = ~codes.isin(allowed).to_numpy()
        batch.reject(
            wrong,
            ["wrong_language"] * int(wrong.sum()),
            [
                f"{conf.filter_column} is in '{code}' according to langid, not one "
                f"of clean.languages {conf.languages}"
                for code in codes[wrong]
            ],
        )
        batch.languages.update(codes[~wrong].tolist())


def _added_columns(conf: CleanConf) -> list[pa.Field]:
    added = []
    if conf.urls_column:
        added.append(pa.field(conf.urls_column, pa.list_(pa.string())))
    if conf.languages:
        added.append(pa.field("language", pa.string()))
    return added


def _with_output_columns(conf: CleanConf, table: pa.Table) -> pa.Table:
    """The input with the columns clean fills in, null for now, and the
    sensitive columns as text (the type of their pseudonyms). Cleaning cleaned
    records finds them in place, and keeps their order."""
    for added in _added_columns(conf):
        if added.name in table.column_names:
            index = table.schema.get_field_index(added.name)
            values = table.column(index).cast(added.type)
            table = table.set_column(index, added, values)
        else:
            table = table.append_column(added, pa.nulls(table.num_rows, added.type))
    for name in conf.pii.sensitive_columns:
        # Cast by Arrow, so that user id 101 is "101" in every batch, whether
        # or not the batch has a null that pandas would turn into a float.
        index = table.schema.get_field_index(name)
        if index < 0:
            raise ConfigError(
                f"clean.pii.sensitive_columns names '{name}', which the records "
                f"do not have (they have: {', '.join(table.column_names)})"
            )
        values = table.column(index).cast(pa.string())
        table = table.set_column(index, _sensitive_field(name), values)
    return table


def _sensitive_field(name: str) -> pa.Field:
    return pa.field(name, pa.string(), metadata=PSEUDONYMISED)


def _pseudonymised_columns(schema: pa.Schema) -> set[str]:
    """Columns marked as holding pseudonyms already (by an earlier clean)."""
    return {f.name for f in schema if (f.metadata or {}) == PSEUDONYMISED}


def protects(conf: CleanConf) -> bool:
    """Whether clean.pii declares anything: an action or a sensitive column."""
    return bool(pii.active_actions(conf.pii) or conf.pii.sensitive_columns)


def _preview(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def clean_frame(
    frame: pd.DataFrame,
    conf: CleanConf,
    pseudonymiser: pii.Pseudonymiser | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean a DataFrame of records: (kept records, rejected records).

    A DataFrame cannot carry the mark that its sensitive columns hold pseudonyms
    already (Arrow field metadata does), so cleaning the kept records again
    would pseudonymise those columns twice; use `Cleaner` on Arrow tables then.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batch = Cleaner(conf, pseudonymiser)(table)
    return batch.kept.to_pandas(), batch.rejects.to_pandas()


# ---------------------------------------------------------------------- run


def check_conf(conf: CleanConf, dataset: str) -> None:
    """Fail before reading anything if the declaration cannot work."""
    where = f"conf/dataset/{dataset}.yaml: key 'dataset.{dataset}.clean"
    for i, pattern in enumerate(conf.strip_prefixes):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{where}.strip_prefixes[{i}]': {pattern!r} is not a regular "
                f"expression ({exc}). Fix it, then run `datakiln compose`."
            ) from None
    if not 0 <= conf.min_chars <= conf.max_chars:
        raise ConfigError(
            f"{where}.min_chars': expected 0 <= min_chars <= max_chars, found "
            f"{conf.min_chars} and {conf.max_chars}. Fix them, then run "
            f"`datakiln compose`."
        )
    for key, token in (
        ("url_token", conf.url_token),
        ("mention_token", conf.mention_token),
    ):
        tag = re.fullmatch(r"</?([A-Za-z][^\s/>]*)\s*/?>", token)
        if conf.html and tag and tag.group(1).lower() in HTML_ELEMENTS:
            raise ConfigError(
                f"{where}.{key}': {token!r} is an HTML tag, which clean.html would "
                f"strip from cleaned text. Choose another token, such as '<url>'."
            )
    _check_pii(conf, where)
    if conf.languages:
        known = set(known_languages())
        unknown = [code for code in conf.languages if code not in known]
        if unknown:
            raise ConfigError(
                f"{where}.languages': langid does not know {unknown}; expected "
                f"ISO 639-1 codes such as 'en' or 'fa'. Fix them, then run "
                f"`datakiln compose`."
            )


def _check_pii(conf: CleanConf, where: str) -> None:
    import phonenumbers

    declared = conf.pii
    if declared.phone_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{where}.pii.phone_region': {declared.phone_region!r} is not a region "
            f"the phonenumbers library knows; expected an ISO 3166 alpha-2 code "
            f"such as 'US' or 'GB'. Fix it, then run `datakiln compose`."
        )
    searched = set(declared.columns or conf.columns)
    both = [c for c in declared.sensitive_columns if c in searched]
    if both:
        raise ConfigError(
            f"{where}.pii.sensitive_columns': {both} are searched for personal data "
            f"too (clean.pii.columns, or clean.columns when that is empty); a "
            f"sensitive column is replaced whole by its pseudonym, so list it in "
            f"one place only. Fix it, then run `datakiln compose`."
        )


# Columns that hold e-mail addresses by their nature: the e-mail reader's
# address headers. With no clean.pii.columns declared they are searched besides
# the clean columns, so that a From: line is never published as it came.
ADDRESS_COLUMNS = ("from", "to")


def searched_columns(conf: CleanConf, schema: pa.Schema) -> list[str]:
    """The columns searched for personal data: clean.pii.columns if declared,
    else the clean columns and any address column the records have."""
    if conf.pii.columns:
        return list(conf.pii.columns)
    skip = {*conf.columns, *conf.pii.sensitive_columns}
    extra = [
        name
        for name in ADDRESS_COLUMNS
        if name in schema.names
        and name not in skip
        and pa.types.is_string(schema.field(name).type)
    ]
    return [*conf.columns, *extra]


def _check_columns(
    conf: CleanConf, schema: pa.Schema, path: Path, dataset: str
) -> None:
    wanted = [("columns", c) for c in conf.columns]
    wanted.append(("filter_column", conf.filter_column))
    wanted += [("pii.columns", c) for c in conf.pii.columns]
    for key, column in wanted:
        if column not in schema.names:
            raise SchemaError(
                f"{path}: no column '{column}' named by dataset.{dataset}.clean."
                f"{key}; the columns are {schema.names}. Fix clean in "
                f"conf/dataset/{dataset}.yaml, then run `datakiln compose`."
            )
        if not pa.types.is_string(schema.field(column).type) and not (
            pa.types.is_large_string(schema.field(column).type)
        ):
            raise SchemaError(
                f"{path}: column '{column}' (dataset.{dataset}.clean.{key}) holds "
                f"{schema.field(column).type}, expected text. Declare it as a string "
                f"in the dataset's schema, or leave it out of clean."
            )
    for column in conf.pii.sensitive_columns:
        if column not in schema.names:
            raise SchemaError(
                f"{path}: no column '{column}' named by dataset.{dataset}.clean.pii."
                f"sensitive_columns; the columns are {schema.names}. Fix clean in "
                f"conf/dataset/{dataset}.yaml, then run `datakiln compose`."
            )
        kind = schema.field(column).type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind):
            raise SchemaError(
                f"{path}: column '{column}' (dataset.{dataset}.clean.pii."
                f"sensitive_columns) holds {kind}; only single values (text, "
                f"numbers, dates) can be replaced by a pseudonym."
            )
    name = conf.urls_column
    if name and name in schema.names and not pa.types.is_list(schema.field(name).type):
        raise SchemaError(
            f"{path}: dataset.{dataset}.clean.urls_column '{name}' is already a "
            f"column of type {schema.field(name).type}. Choose another name."
        )


def _output_schema(conf: CleanConf, schema: pa.Schema) -> pa.Schema:
    return _with_output_columns(conf, schema.empty_table()).schema


def _rejects_schema(schema: pa.Schema) -> pa.Schema:
    for name in ("reject_stage", "reject_reason", "reject_detail"):
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def run(ctx: StageContext) -> None:
    conf = ctx.conf.clean
    check_conf(conf, ctx.dataset)
    source = ctx.paths.table("ingest")
    if not source.exists():
        raise SourceError(
            f"{source} is missing. Run `dvc repro ingest@{ctx.dataset}` first."
        )
    schema = pq.read_schema(source)
    _check_columns(conf, schema, source, ctx.dataset)

    # The key is decrypted in memory once per run; None when nothing is
    # pseudonymised.
    cleaner = Cleaner(conf, pii.pseudonymiser_for(ctx.root, conf.pii))
    total = _Totals(pii_counts=_pii_counts(conf))
    batches = read_arrow_batches(source, BATCH_ROWS)
    n_batches = math.ceil(count_rows(source) / BATCH_ROWS)
    out_schema = _output_schema(conf, schema)
    with (
        ParquetSink(ctx.paths.table(STAGE), out_schema) as kept_sink,
        ParquetSink(ctx.paths.rejects(STAGE), _rejects_schema(out_schema)) as rej_sink,
    ):
        for batch in progress(batches, n_batches, f"clean@{ctx.dataset}", "batches"):
            result = cleaner(pa.Table.from_batches([batch]))
            rejects = result.rejects
            if result.kept.num_rows:
                kept_sink.write_table(result.kept)
            if rejects.num_rows:
                rej_sink.write_table(rejects)
            total.add(batch.num_rows, result)

    if total.unstable:
        logger.warning(
            "clean@%s: %d texts still changed after %d passes of the rules; two "
            "rules of clean undo each other",
            ctx.dataset,
            total.unstable,
            MAX_PASSES,
        )
    ctx.write_metrics(total.metrics(conf))
    write_length_plot(ctx.paths.plot("text_length"), total.lengths)
    logger.info(
        "clean@%s: %d of %d records kept, %d rejected",
        ctx.dataset,
        total.rows_out,
        total.rows_in,
        total.rows_in - total.rows_out,
    )


@dataclass
class _Totals:
    rows_in: int = 0
    rows_out: int = 0
    urls: int = 0
    unstable: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    lengths: Counter[int] = field(default_factory=Counter)
    pii_counts: pii.PiiCounts = field(default_factory=pii.PiiCounts)

    def add(self, rows: int, batch: CleanedBatch) -> None:
        self.rows_in += rows
        self.rows_out += batch.kept.num_rows
        self.urls += batch.urls
        self.unstable += batch.unstable
        self.reasons.update(batch.reasons)
        self.changed.update(batch.changed)
        self.languages.update(batch.languages)
        self.lengths.update(batch.lengths)
        self.pii_counts.add(batch.pii_counts)

    def metrics(self, conf: CleanConf) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rows_in - self.rows_out,
            "rejects": {
                reason: self.reasons[reason] for reason in reject_reasons(conf)
            },
            "changed": {
                step.name: self.changed[step.name] for step in text_steps(conf)
            },
        }
        if conf.languages:
            metrics["languages"] = dict(sorted(self.languages.items()))
        if conf.urls_column:
            metrics["urls_found"] = self.urls
        if protects(conf):
            metrics["pii"] = self.pii_counts.as_metrics()
        return metrics


def _pii_counts(conf: CleanConf) -> pii.PiiCounts:
    # Every declared kind is listed in the metrics, found or not.
    actions = pii.active_actions(conf.pii)
    counts = pii.PiiCounts(actions={kind: a.value for kind, a in actions.items()})
    counts.columns = dict.fromkeys(conf.pii.sensitive_columns, 0)
    return counts


def reject_reasons(conf: CleanConf) -> list[str]:
    """Every reason clean may give under `conf`: pii_<kind> for each `drop` kind."""
    actions = pii.active_actions(conf.pii)
    dropped = [f"pii_{k}" for k, a in actions.items() if a is PiiAction.drop]
    return [*REJECT_REASONS, *dropped]


def length_histogram(lengths: Counter[int], bins: int = PLOT_BINS) -> pd.DataFrame:
    """Records per text length, in equal bins of a round width (1, 2, 5, 10...).

    `chars` is the lower edge of each bin; empty bins between the shortest and
    the longest text are kept so the plot has no gaps.
    """
    if not lengths:
        return pd.DataFrame({"chars": pd.Series([], dtype=int), "records": []})
    low, high = min(lengths), max(lengths)
    width = _round_width((high - low + 1) / bins)
    start = low // width * width
    edges = np.arange(start, high + 1, width)
    counts = np.zeros(len(edges), dtype=int)
    for length, n in lengths.items():
        counts[(length - start) // width] += n
    return pd.DataFrame({"chars": edges, "records": counts})


def _round_width(raw: float) -> int:
    width = 1
    while True:
        for step in (1, 2, 5):
            if step * width >= raw:
                return step * width
        width *= 10


def write_length_plot(path: Path, lengths: Counter[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    length_histogram(lengths).to_csv(tmp, index=False)
    os.replace(tmp, path)
