"""Personal data: detection by kind, the four actions, pseudonyms, counts."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pandas as pd
import pytest
from sops_helpers import AgeKey, clean_env, default_key_file, write_sops_config

from datakiln.config import PiiAction, PiiActionsConf, PiiConf
from datakiln.errors import ConfigError, SecretError
from datakiln.pii import KINDS, Pseudonymiser, find, protect, pseudonymiser_for
from datakiln.secrets import store as store_module
from datakiln.secrets.manage import set_secret
from datakiln.secrets.store import SecretStore

KEY = "k" * 24 + "-test-pseudonym-key-0123456789"
ALL = list(KINDS)


def conf(**actions: str) -> PiiConf:
    return PiiConf(
        actions=PiiActionsConf(**{k: PiiAction(v) for k, v in actions.items()})
    )


def kinds_in(text: str, region: str = "US") -> list[tuple[str, str]]:
    return [(m.kind, text[m.start : m.end]) for m in find(text, ALL, region)]


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("text", "kind", "found", "canonical"),
    [
        (
            "write to Ana.Lopez@Example.org today",
            "email",
            "Ana.Lopez@Example.org",
            "ana.lopez@example.org",
        ),
        ("call (212) 555-0187 now", "phone", "(212) 555-0187", "+12125550187"),
        ("or +44 20 7946 0958 in London", "phone", "+44 20 7946 0958", "+442079460958"),
        (
            "card 4111 1111 1111 1111 expires",
            "card",
            "4111 1111 1111 1111",
            "4111111111111111",
        ),
        ("amex 3782-822463-10005 ok", "card", "3782-822463-10005", "378282246310005"),
        ("from 192.168.1.10 at", "ip", "192.168.1.10", "192.168.1.10"),
        ("v6 2001:DB8:0:0::1 seen", "ip", "2001:DB8:0:0::1", "2001:db8::1"),
        (
            "pay DE89 3704 0044 0532 0130 00 AND more",
            "iban",
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
        ),
        (
            "pay GB82WEST12345698765432 now",
            "iban",
            "GB82WEST12345698765432",
            "GB82WEST12345698765432",
        ),
        ("thanks @Health_News!", "mention", "@Health_News", "health_news"),
    ],
)
def test_each_kind_is_found_with_its_canonical_form(
    text: str, kind: str, found: str, canonical: str
) -> None:
    (match,) = find(text, ALL, "US")
    assert (match.kind, text[match.start : match.end], match.canonical) == (
        kind,
        found,
        canonical,
    )


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails the Luhn check",
        "iban DE88 3704 0044 0532 0130 00 has wrong check digits",
        "not an address: 999.10.1.1, nor version v1.2.3.4",
        "a time 10:30:45 and a ratio 1:2:3",
        "status https://twitter.com/x/status/4111111111111111 and www.a.com/@bob",
        "a year 2015 and a count of 1,000,000",
        "<email:0123456789abcdef> and <phone> are tokens already",
    ],
)
def test_look_alikes_are_not_personal_data(text: str) -> None:
    assert kinds_in(text) == []


def test_overlaps_go_to_the_more_specific_kind() -> None:
    text = "mail bob@news.com, card 4111111111111111"
    assert kinds_in(text) == [("email", "bob@news.com"), ("card", "4111111111111111")]


def test_only_declared_kinds_are_looked_for() -> None:
    text = "bob@news.com or @bob"
    assert [m.kind for m in find(text, ["mention"])] == ["mention"]


# ---------------------------------------------------------------- actions


@pytest.fixture
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(KEY)


def frame(*texts: str | None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(len(texts))],
            "text": pd.Series(texts, dtype="string"),
        }
    )


def test_mask_replaces_each_match_by_its_kind() -> None:
    result = protect(
        frame("mail a@b.com or call (212) 555-0187", None),
        conf(email="mask", phone="mask"),
        ["text"],
        None,
    )
    assert result.kept["text"].tolist()[0] == "mail <email> or call <phone>"
    assert pd.isna(result.kept["text"].tolist()[1])
    assert result.counts.as_metrics()["kinds"] == {
        "email": {"action": "mask", "matches": 1, "records": 1},
        "phone": {"action": "mask", "matches": 1, "records": 1},
    }


def test_keep_leaves_the_text_and_counts_it() -> None:
    result = protect(frame("hi @bob and @amy"), conf(mention="keep"), ["text"], None)
    assert result.kept["text"].tolist() == ["hi @bob and @amy"]
    assert result.counts.as_metrics()["kinds"]["mention"] == {
        "action": "keep",
        "matches": 2,
        "records": 1,
    }


def test_pseudonyms_are_keyed_hmacs_of_the_canonical_value(
    pseudonymiser: Pseudonymiser,
) -> None:
    result = protect(
        frame("from Ana@Example.org", "again ana@example.ORG"),
        conf(email="pseudonymise"),
        ["text"],
        pseudonymiser,
    )
    expected = hmac.new(KEY.encode(), b"ana@example.org", hashlib.sha256).hexdigest()
    assert result.kept["text"].tolist() == [
        f"from <email:{expected[:16]}>",
        f"again <email:{expected[:16]}>",
    ]


def test_the_same_value_gets_the_same_token_in_another_batch_and_dataset(
    pseudonymiser: Pseudonymiser,
) -> None:
    first = protect(
        frame("@Bob says"), conf(mention="pseudonymise"), ["text"], pseudonymiser
    )
    other_dataset = protect(
        pd.DataFrame({"body": ["cc @bob"], "author": ["bob"]}),
        PiiConf(
            actions=PiiActionsConf(mention=PiiAction.pseudonymise),
            columns=["body"],
            sensitive_columns=["author"],
        ),
        ["body"],
        Pseudonymiser(KEY),
    )
    token = first.kept["text"].iloc[0].split(":")[1].split(">")[0]
    assert other_dataset.kept["body"].iloc[0] == f"cc <mention:{token}>"
    assert other_dataset.kept["author"].iloc[0] == token


def test_another_key_gives_other_tokens_and_a_short_key_is_refused() -> None:
    a = Pseudonymiser(KEY).token("bob")
    b = Pseudonymiser(KEY[::-1]).token("bob")
    assert a != b and "bob" not in a
    with pytest.raises(SecretError, match="shorter than 32 characters"):
        Pseudonymiser("short")
    assert repr(Pseudonymiser(KEY)) == "Pseudonymiser(key=<hidden>)"


def test_drop_moves_the_record_to_the_rejects_masked_with_a_stable_reason(
    pseudonymiser: Pseudonymiser,
) -> None:
    result = protect(
        frame("fine text", "card 4111 1111 1111 1111 and bob@x.org", "@amy hi"),
        conf(card="drop", email="drop", mention="pseudonymise"),
        ["text"],
        pseudonymiser,
    )
    assert result.kept["record_id"].tolist() == ["r0", "r2"]
    (reject,) = result.rejects.to_dict("records")
    assert reject["record_id"] == "r1"
    assert reject["text"] == "card <card> and <email>"
    assert reject["reject_stage"] == "clean"
    assert reject["reject_reason"] == "pii_email"
    assert reject["reject_detail"] == (
        "column 'text' holds personal data declared `drop` (1 email, 1 card); "
        "shown masked here"
    )
    assert result.counts.as_metrics()["dropped_records"] == {"email": 1}


def test_protecting_twice_changes_nothing(pseudonymiser: Pseudonymiser) -> None:
    declared = conf(
        email="pseudonymise",
        phone="mask",
        card="mask",
        ip="pseudonymise",
        mention="pseudonymise",
    )
    texts = frame("a@b.com +1 212 555 0187 4111111111111111 10.0.0.1 @zed", "plain")
    once = protect(texts, declared, ["text"], pseudonymiser).kept
    twice = protect(once, declared, ["text"], pseudonymiser)
    assert twice.kept["text"].tolist() == once["text"].tolist()
    assert twice.counts.matches == {}


def test_sensitive_columns_are_replaced_and_nulls_stay_null(
    pseudonymiser: Pseudonymiser,
) -> None:
    data = pd.DataFrame({"text": ["x", "y", "z"], "user_id": [101, None, 101]})
    result = protect(
        data, PiiConf(sensitive_columns=["user_id"]), ["text"], pseudonymiser
    )
    tokens = result.kept["user_id"].tolist()
    assert tokens[0] == tokens[2] == pseudonymiser.token("101.0")
    assert pd.isna(tokens[1])
    assert result.counts.as_metrics()["pseudonymised_columns"] == {"user_id": 2}


def test_a_missing_sensitive_column_is_named(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(
        ConfigError, match=r"sensitive_columns names 'author'.*have: record_id, text"
    ):
        protect(
            frame("x"), PiiConf(sensitive_columns=["author"]), ["text"], pseudonymiser
        )


def test_values_reach_no_log(
    caplog: pytest.LogCaptureFixture, pseudonymiser: Pseudonymiser
) -> None:
    caplog.set_level(logging.DEBUG)
    protect(
        frame("secret.person@mail.com 4111111111111111"),
        conf(email="drop", card="mask"),
        ["text"],
        pseudonymiser,
    )
    assert "secret.person" not in caplog.text and "4111111111111111" not in caplog.text


# ---------------------------------------------------------------- the key


def test_the_key_comes_from_sops_only_when_something_is_pseudonymised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = AgeKey.generate()
    home = tmp_path / "home"
    key.write(default_key_file(home))
    write_sops_config(tmp_path, key.recipient)
    set_secret(SecretStore(tmp_path, clean_env(home)), "pii", "pseudonym_key", KEY)
    monkeypatch.setattr(
        store_module,
        "_STORES",
        {tmp_path.resolve(): SecretStore(tmp_path, clean_env(home))},
    )

    assert pseudonymiser_for(tmp_path, conf(email="mask")) is None
    made = pseudonymiser_for(tmp_path, conf(email="pseudonymise"))
    assert made is not None and made.token("x") == Pseudonymiser(KEY).token("x")


def test_a_literal_key_in_config_is_refused(tmp_path: Path) -> None:
    literal = PiiConf(actions=PiiActionsConf(email=PiiAction.pseudonymise), key=KEY)
    with pytest.raises(
        ConfigError, match=r"clean\.pii\.key must be one secret reference"
    ):
        pseudonymiser_for(tmp_path, literal)
