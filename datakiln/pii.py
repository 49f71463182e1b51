"""Personal data in records: find it, then keep, mask, pseudonymise or drop it.

Kinds found in text columns: e-mail addresses, phone numbers (the
`phonenumbers` library, valid numbers only), card numbers (13 to 19 digits
passing the Luhn check, python-stdnum), IP addresses (validated by the
standard `ipaddress`), IBANs (country length and check digits, python-stdnum)
and @mentions. Numbers inside URLs are not taken for phones, cards or IBANs.

A pseudonym is a keyed HMAC-SHA256 of the value in a canonical form (e-mail in
lower case, phone in E.164, digits of a card, compact IBAN, compressed IP,
mention without @ in lower case), so the same value gets the same token in
every build and dataset, and nobody without the key can reverse or confirm it.
The key is a sops secret. Values never leave the transform: counts go to the
metrics, and a dropped record reaches the rejects with its personal data
masked and a reason naming only the kind.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datakiln.config import PiiAction, PiiConf
from datakiln.errors import ConfigError, SecretError

logger = logging.getLogger(__name__)

STAGE = "clean"
# Detection order; where two matches overlap, the earlier kind wins.
KINDS = ("email", "iban", "card", "ip", "phone", "mention")
# Kinds that are mostly digits, which URLs (status ids, paths) are full of.
_NUMERIC = frozenset({"iban", "card", "ip", "phone"})
TOKEN_HEX = 16
MIN_KEY_CHARS = 32

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_MENTION = re.compile(r"(?<![\w@/.])@([A-Za-z0-9_]{1,30})(?![\w@])")
_CARD = re.compile(r"(?<![\w/.,-])\d(?:[ -]?\d){12,18}(?![\w/]|[.,-]\d)")
_CARD_HINT = re.compile(r"\d{4}[ -]?\d{4}")
_IBAN = re.compile(r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)")
_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE_RUN = re.compile(r"\+?\(?\d[\d\s().\-/]{5,24}\d")
_DIGIT = re.compile(r"\d")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_TOKEN = re.compile(rf"<(?:{'|'.join(KINDS)})(?::[0-9a-f]{{{TOKEN_HEX}}})?>")


@dataclass(frozen=True)
class Match:
    """One piece of personal data: where it is, its kind, its canonical form."""

    start: int
    end: int
    kind: str
    canonical: str = field(repr=False)


class Pseudonymiser:
    """Keyed HMAC-SHA256 tokens; the key never shows in a repr."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise SecretError(
                f"the pseudonym key is shorter than {MIN_KEY_CHARS} characters, so "
                f"tokens of short values (phone numbers) could be confirmed by "
                f"guessing. Make a new one with `datakiln secrets set "
                f"conf/secrets/pii.yaml pseudonym_key --generate` (every token "
                f"changes)."
            )
        self._key = key.encode("utf-8")

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<hidden>)"

    def token(self, canonical: str) -> str:
        mac = hmac.new(self._key, canonical.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:TOKEN_HEX]


# ------------------------------------------------------------------ detection


def _emails(text: str, region: str) -> Iterator[Match]:
    for m in _EMAIL.finditer(text):
        yield Match(m.start(), m.end(), "email", m.group().lower())


def _mentions(text: str, region: str) -> Iterator[Match]:
    for m in _MENTION.finditer(text):
        yield Match(m.start(), m.end(), "mention", m.group(1).lower())


def _cards(text: str, region: str) -> Iterator[Match]:
    from stdnum import luhn

    if not _CARD_HINT.search(text):
        return
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits):
            yield Match(m.start(), m.end(), "card", digits)


def _ibans(text: str, region: str) -> Iterator[Match]:
    from stdnum import iban

    if not _IBAN_HINT.search(text):
        return
    for m in _IBAN.finditer(text):
        parts = m.group().split(" ")
        # The pattern may run on into the next word; try shorter spans too.
        for count in range(len(parts), 0, -1):
            candidate = " ".join(parts[:count])
            if iban.is_valid(candidate):
                end = m.start() + len(candidate)
                yield Match(m.start(), end, "iban", iban.compact(candidate))
                break


def _ips(text: str, region: str) -> Iterator[Match]:
    ipv4 = _IPV4.finditer(text) if _IPV4_HINT.search(text) else iter(())
    for m in ipv4:
        try:
            address = ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield Match(m.start(), m.end(), "ip", str(address))
    if "::" not in text and text.count(":") < 7:
        return
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if candidate.count(":") < 2 or sum(c not in ":" for c in candidate) < 2:
            continue
        try:
            address6 = ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield Match(m.start(), m.end(), "ip", str(address6))


def _phones(text: str, region: str) -> Iterator[Match]:
    import phonenumbers

    # The matcher is slow on long texts; give it only runs that could be phones.
    for run in _PHONE_RUN.finditer(text):
        if sum(c.isdigit() for c in run.group()) < 7:
            continue
        matcher = phonenumbers.PhoneNumberMatcher(
            run.group(), region, leniency=phonenumbers.Leniency.VALID
        )
        for m in matcher:
            canonical = phonenumbers.format_number(
                m.number, phonenumbers.PhoneNumberFormat.E164
            )
            yield Match(run.start() + m.start, run.start() + m.end, "phone", canonical)


_DETECTORS: dict[str, Callable[[str, str], Iterator[Match]]] = {
    "email": _emails,
    "iban": _ibans,
    "card": _cards,
    "ip": _ips,
    "phone": _phones,
    "mention": _mentions,
}


def find(
    text: str, kinds: tuple[str, ...] | list[str], region: str = "US"
) -> list[Match]:
    """Non-overlapping personal data in `text`, in order of position.

    Kinds are searched in priority order; what one kind (or an earlier token)
    took is blanked out before the next looks, so a card number cannot spoil
    the phone number beside it, and a rerun never matches its own tokens.
    """
    if "@" not in text and _DIGIT.search(text) is None:
        return []
    tokens = _TOKEN.finditer(text) if "<" in text else iter(())
    work = _blank(text, [(m.start(), m.end()) for m in tokens])
    # Numbers and @ inside URLs are paths and ids, not phones or mentions.
    plain = _blank(work, [(m.start(), m.end()) for m in _URL.finditer(work)])
    has_digit = _DIGIT.search(plain) is not None
    found: list[Match] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        view = work if kind == "email" else plain
        if not (has_digit if kind in _NUMERIC else "@" in view):
            continue
        matches = list(_DETECTORS[kind](view, region))
        if matches:
            spans = [(m.start, m.end) for m in matches]
            work, plain = _blank(work, spans), _blank(plain, spans)
            found.extend(matches)
    return sorted(found, key=lambda m: m.start)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span overwritten by '#', a character no kind contains."""
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        chars[start:end] = "#" * (end - start)
    return "".join(chars)


# ------------------------------------------------------------------ actions


@dataclass
class PiiCounts:
    """Matches and records per kind, and values pseudonymised per column."""

    actions: dict[str, str] = field(default_factory=dict)
    matches: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    columns: dict[str, int] = field(default_factory=dict)

    def add(self, other: PiiCounts) -> None:
        self.actions.update(other.actions)
        for mine, theirs in (
            (self.matches, other.matches),
            (self.records, other.records),
            (self.dropped, other.dropped),
            (self.columns, other.columns),
        ):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count

    def as_metrics(self) -> dict[str, Any]:
        """Counts by kind and action for the metrics file; never a value."""
        kinds = {
            kind: {
                "action": action,
                "matches": self.matches.get(kind, 0),
                "records": self.records.get(kind, 0),
            }
            for kind, action in self.actions.items()
        }
        return {
            "kinds": kinds,
            "dropped_records": self.dropped,
            "pseudonymised_columns": self.columns,
        }


@dataclass
class PiiResult:
    kept: pd.DataFrame
    rejects: pd.DataFrame
    counts: PiiCounts


def active_actions(conf: PiiConf) -> dict[str, PiiAction]:
    actions = {kind: getattr(conf.actions, kind) for kind in KINDS}
    return {k: a for k, a in actions.items() if a is not PiiAction.off}


def needs_key(conf: PiiConf) -> bool:
    """Whether the declaration pseudonymises anything, and so needs the key."""
    pseudonymised = PiiAction.pseudonymise in active_actions(conf).values()
    return pseudonymised or bool(conf.sensitive_columns)


def pseudonymiser_for(root: Path, conf: PiiConf) -> Pseudonymiser | None:
    """The pseudonymiser, its key decrypted in memory; None if none is needed."""
    if not needs_key(conf):
        return None
    from datakiln.secrets.refs import names_in
    from datakiln.secrets.store import store_for

    names = names_in(conf.key)
    if len(names) != 1 or conf.key.strip() != "${secret:" + names[0] + "}":
        raise ConfigError(
            "clean.pii.key must be one secret reference such as "
            "${secret:pii.pseudonym_key}, never the key itself (params.yaml and "
            "dvc.lock would hold it). Store the key with `datakiln secrets set "
            "conf/secrets/pii.yaml pseudonym_key --generate`."
        )
    return Pseudonymiser(store_for(root).get(names[0]).reveal())


@dataclass
class PiiOutcome:
    """One batch after the actions, every record still in place."""

    frame: pd.DataFrame
    # Which records a `drop` kind sends to the rejects, with reason and detail.
    dropped: np.ndarray
    reasons: list[str]
    details: list[str]
    counts: PiiCounts


def apply(
    frame: pd.DataFrame,
    conf: PiiConf,
    columns: list[str],
    pseudonymiser: Pseudonymiser | None,
) -> PiiOutcome:
    """Apply the declared action to every match in `columns` of one batch.

    Matches are masked, pseudonymised or kept in place; records holding a
    `drop` kind are marked, with reason `pii_<kind>`, and their text is masked
    so that the rejects never hold the value either. Sensitive columns become
    pseudonyms in every record.
    """
    actions = active_actions(conf)
    if needs_key(conf) and pseudonymiser is None:
        raise SecretError(
            "clean.pii pseudonymises but no pseudonym key was given; the clean "
            "stage reads it with datakiln.pii.pseudonymiser_for"
        )
    counts = PiiCounts(actions={k: a.value for k, a in actions.items()})
    searched = [c for c in (conf.columns or columns) if c in frame.columns]
    out = frame.copy()
    drop: list[tuple[str, str] | None] = [None] * len(out)
    # The kinds found in each record, over all the searched columns: a record
    # with an address in two columns is one record with an e-mail address.
    found: list[set[str]] = [set() for _ in range(len(out))]
    for column in searched:
        texts, reasons = _protect_column(
            out[column].tolist(), column, actions, conf, pseudonymiser, counts, found
        )
        out[column] = pd.Series(texts, index=out.index, dtype=out[column].dtype)
        drop = [d if d is not None else r for d, r in zip(drop, reasons, strict=True)]
    for kinds in found:
        for kind in kinds:
            counts.records[kind] = counts.records.get(kind, 0) + 1
    for column in conf.sensitive_columns:
        _pseudonymise_column(out, column, pseudonymiser, counts)
    marked = [d for d in drop if d is not None]
    for reason, _ in marked:
        kind = reason.removeprefix("pii_")
        counts.dropped[kind] = counts.dropped.get(kind, 0) + 1
    return PiiOutcome(
        frame=out,
        dropped=np.array([d is not None for d in drop], dtype=bool),
        reasons=[reason for reason, _ in marked],
        details=[detail for _, detail in marked],
        counts=counts,
    )


def protect(
    frame: pd.DataFrame,
    conf: PiiConf,
    columns: list[str],
    pseudonymiser: Pseudonymiser | None,
) -> PiiResult:
    """`apply`, split into the records kept and the rejects (reject_* columns)."""
    outcome = apply(frame, conf, columns, pseudonymiser)
    rejects = outcome.frame[outcome.dropped].copy()
    rejects["reject_stage"] = STAGE
    rejects["reject_reason"] = outcome.reasons
    rejects["reject_detail"] = outcome.details
    return PiiResult(outcome.frame[~outcome.dropped], rejects, outcome.counts)


def _protect_column(
    values: list[Any],
    column: str,
    actions: dict[str, PiiAction],
    conf: PiiConf,
    pseudonymiser: Pseudonymiser | None,
    counts: PiiCounts,
    found: list[set[str]],
) -> tuple[list[Any], list[tuple[str, str] | None]]:
    """One column protected; the kinds found in each value join `found`."""
    kinds = list(actions)
    texts: list[Any] = []
    reasons: list[tuple[str, str] | None] = []
    for value, record_kinds in zip(values, found, strict=True):
        if not isinstance(value, str) or not value:
            texts.append(value)
            reasons.append(None)
            continue
        matches = find(value, kinds, conf.phone_region)
        texts.append(_rewrite(value, matches, actions, pseudonymiser))
        reasons.append(_drop_reason(matches, actions, column))
        record_kinds.update(m.kind for m in matches)
        for match in matches:
            counts.matches[match.kind] = counts.matches.get(match.kind, 0) + 1
    return texts, reasons


def _rewrite(
    text: str,
    matches: list[Match],
    actions: dict[str, PiiAction],
    pseudonymiser: Pseudonymiser | None,
) -> str:
    pieces: list[str] = []
    cursor = 0
    for match in matches:
        action = actions[match.kind]
        if action is PiiAction.keep:
            continue
        pieces.append(text[cursor : match.start])
        if action is PiiAction.pseudonymise and pseudonymiser is not None:
            pieces.append(f"<{match.kind}:{pseudonymiser.token(match.canonical)}>")
        else:  # mask, and drop: a dropped record's rejects copy is masked
            pieces.append(f"<{match.kind}>")
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _drop_reason(
    matches: list[Match], actions: dict[str, PiiAction], column: str
) -> tuple[str, str] | None:
    dropping = [m.kind for m in matches if actions[m.kind] is PiiAction.drop]
    if not dropping:
        return None
    kinds = sorted(set(dropping), key=KINDS.index)
    listed = ", ".join(f"{dropping.count(k)} {k}" for k in kinds)
    return (
        f"pii_{kinds[0]}",
        f"column '{column}' holds personal data declared `drop` ({listed}); "
        f"shown masked here",
    )


def _pseudonymise_column(
    frame: pd.DataFrame,
    column: str,
    pseudonymiser: Pseudonymiser | None,
    counts: PiiCounts,
) -> None:
    if column not in frame.columns:
        raise ConfigError(
            f"clean.pii.sensitive_columns names '{column}', which the records do "
            f"not have (they have: {', '.join(map(str, frame.columns))}). Fix "
            f"the declaration, then run `datakiln compose`."
        )
    assert pseudonymiser is not None
    present = frame[column].notna()
    tokens = [pseudonymiser.token(str(v)) for v in frame.loc[present, column]]
    frame[column] = frame[column].astype("object")
    frame.loc[present, column] = tokens
    frame[column] = frame[column].astype("string")
    counts.columns[column] = counts.columns.get(column, 0) + int(present.sum())
