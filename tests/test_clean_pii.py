"""Personal data in the clean stage: the pii phase between the text rules and
the filters, with a pseudonym key that this test stores with the real sops."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MakeContext
from sops_helpers import AgeKey, clean_env, default_key_file, write_sops_config

from datakiln import clean
from datakiln.config import (
    CleanConf,
    DedupConf,
    PiiAction,
    PiiActionsConf,
    PiiConf,
    TokenAction,
)
from datakiln.dedup import dedup_frame
from datakiln.errors import ConfigError, SchemaError, SecretError
from datakiln.pii import Pseudonymiser
from datakiln.secrets import store as store_module
from datakiln.secrets.manage import set_secret
from datakiln.secrets.store import SecretStore
from datakiln.stage import StageContext


def token(key: str, canonical: str) -> str:
    """What a pseudonym must be: HMAC-SHA256 of the canonical value, 16 hex."""
    mac = hmac.new(key.encode(), canonical.encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A pseudonym key in tmp_path's conf/secrets/pii.yaml, encrypted by sops
    for an age key made here; the stage decrypts it as it would in a build."""
    value = secrets.token_urlsafe(32)
    age = AgeKey.generate()
    home = tmp_path / "home"
    age.write(default_key_file(home))
    write_sops_config(tmp_path, age.recipient)
    set_secret(SecretStore(tmp_path, clean_env(home)), "pii", "pseudonym_key", value)
    monkeypatch.setattr(
        store_module,
        "_STORES",
        {tmp_path.resolve(): SecretStore(tmp_path, clean_env(home))},
    )
    return value


def records(texts: list[str | None], **columns: list[Any]) -> pd.DataFrame:
    """Records as ingest writes them: record columns, then the data."""
    n = len(texts)
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "source_name": ["tickets"] * n,
            "source_file": ["tickets.csv"] * n,
            "source_row": list(range(1, n + 1)),
            "text": texts,
            **columns,
        }
    )


def write_ingest(ctx: StageContext, table: pa.Table) -> None:
    path = ctx.paths.table("ingest")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def run_clean(ctx: StageContext) -> tuple[pa.Table, pd.DataFrame, dict[str, Any]]:
    clean.run(ctx)
    kept = pq.read_table(ctx.paths.table("clean"))
    rejects = pq.read_table(ctx.paths.rejects("clean")).to_pandas()
    metrics = json.loads(ctx.paths.metrics("clean").read_text())
    return kept, rejects, metrics


TICKETS: dict[str, Any] = {
    "clean": {
        "min_chars": 12,
        "pii": {
            "actions": {"email": "pseudonymise", "phone": "mask", "card": "drop"},
            "sensitive_columns": ["author_id"],
        },
    }
}
TEXTS = [
    "Write to Ana.Lopez@Example.org today",
    "or call (212) 555-0187 after nine",
    # The second batch: the same address, written otherwise.
    "again: ana.lopez@example.ORG, thanks",
    "pay with 4111 1111 1111 1111, or mail bob@tickets.org",
    "hi (212) 555-0188",
]


@pytest.fixture
def tickets(
    make_context: MakeContext, key: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[pa.Table, pd.DataFrame, dict[str, Any]]:
    monkeypatch.setattr(clean, "BATCH_ROWS", 2)
    ctx = make_context("clean", TICKETS)
    author_id = pa.array([101, None, 101, 7, 8], pa.int64())
    frame = records(TEXTS)
    write_ingest(ctx, pa.Table.from_pandas(frame).append_column("author_id", author_id))
    return run_clean(ctx)


def test_email_is_pseudonymised_with_one_token_across_batches(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]], key: str
) -> None:
    kept, _, _ = tickets

    ana = token(key, "ana.lopez@example.org")
    assert kept.column("text").to_pylist() == [
        f"Write to <email:{ana}> today",
        "or call <phone> after nine",
        f"again: <email:{ana}>, thanks",
    ]


def test_the_address_headers_of_mail_are_searched_without_being_declared(
    make_context: MakeContext,
) -> None:
    declaration = {"clean": {"pii": {"actions": {"email": "mask"}}}}
    ctx = make_context("clean", declaration)
    frame = records(
        ["Please refund order 12", "Parcel never came"],
        **{
            "from": ["Ana Lopez <ana@example.org>", "bob@example.net"],
            "to": ["support@shop.example", None],
            "message_id": ["<m1@mail.example>", "<m2@mail.example>"],
        },
    )
    write_ingest(ctx, pa.Table.from_pandas(frame))

    kept, _, metrics = run_clean(ctx)

    assert kept.column("from").to_pylist() == ["Ana Lopez <<email>>", "<email>"]
    assert kept.column("to").to_pylist() == ["<email>", None]
    # not an address header: left as it came
    assert kept.column("message_id").to_pylist() == frame["message_id"].tolist()
    assert metrics["pii"]["kinds"]["email"] == {
        "action": "mask",
        "matches": 3,
        "records": 2,
    }


def test_sensitive_column_becomes_text_pseudonyms_in_every_batch(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]], key: str
) -> None:
    kept, rejects, _ = tickets

    # 101 is "101" whether or not its batch holds a null (no "101.0").
    assert kept.column("author_id").to_pylist() == [
        token(key, "101"),
        None,
        token(key, "101"),
    ]
    assert kept.schema.field("author_id").type == pa.string()
    assert set(rejects["author_id"]) == {token(key, "7"), token(key, "8")}


def test_a_drop_kind_goes_to_the_rejects_masked_with_its_reason(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]], key: str
) -> None:
    _, rejects, _ = tickets

    by_id = rejects.set_index("record_id")
    assert by_id["reject_reason"].to_dict() == {"r3": "pii_card", "r4": "too_short"}
    # The other kinds in a dropped record get their own action, never the raw value.
    bob = token(key, "bob@tickets.org")
    assert by_id.loc["r3", "text"] == f"pay with <card>, or mail <email:{bob}>"
    assert by_id.loc["r4", "text"] == "hi <phone>"
    cells = " ".join(map(str, rejects.to_dict("records")))
    for raw in ("4111", "bob@", "555-0188", "Lopez"):
        assert raw not in cells


def test_metrics_count_each_kind_and_action_exactly(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]],
) -> None:
    _, _, metrics = tickets

    assert metrics["pii"] == {
        "kinds": {
            "email": {"action": "pseudonymise", "matches": 3, "records": 3},
            "phone": {"action": "mask", "matches": 2, "records": 2},
            "card": {"action": "drop", "matches": 1, "records": 1},
        },
        "dropped_records": {"card": 1},
        "pseudonymised_columns": {"author_id": 4},
    }
    assert metrics["rejects"]["pii_card"] == 1
    assert metrics["rejects"]["too_short"] == 1
    assert (metrics["rows_in"], metrics["rows_out"], metrics["rejected"]) == (5, 3, 2)


def test_no_output_of_clean_holds_a_raw_value(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]],
    make_context: MakeContext,
) -> None:
    ctx = make_context("clean", TICKETS)
    outputs = [ctx.paths.table("clean"), ctx.paths.rejects("clean")]
    text = " ".join(str(pq.read_table(p).to_pylist()) for p in outputs)
    text += ctx.paths.metrics("clean").read_text()
    for raw in ("Lopez", "lopez", "bob@", "555-01", "4111", "'101'"):
        assert raw not in text


def test_the_same_email_gets_the_same_token_in_another_dataset(
    tickets: tuple[pa.Table, pd.DataFrame, dict[str, Any]],
    make_context: MakeContext,
    key: str,
) -> None:
    kept, _, _ = tickets
    other = make_context(
        "clean",
        {
            "clean": {
                "columns": ["title", "body"],
                "filter_column": "body",
                "pii": {"actions": {"email": "pseudonymise"}},
            }
        },
        dataset="articles",
    )
    frame = records(["x"]).drop(columns="text")
    frame["title"] = ["Contact: ANA.LOPEZ@EXAMPLE.ORG"]
    frame["body"] = ["Press contact for the clinic story"]
    write_ingest(other, pa.Table.from_pandas(frame))

    articles, _, _ = run_clean(other)

    ana = token(key, "ana.lopez@example.org")
    assert articles.column("title").to_pylist() == [f"Contact: <email:{ana}>"]
    assert f"<email:{ana}>" in kept.column("text").to_pylist()[0]


# ------------------------------------------------------------------ stability

MIXED_DECLARATION: dict[str, Any] = {
    "clean": {
        "unicode": "NFKC",
        "urls": "replace",
        "urls_column": "urls",
        "mentions": "keep",
        "strip_prefixes": ["RT @[A-Za-z0-9_]+: ?"],
        "pii": {
            "actions": {
                "email": "pseudonymise",
                "phone": "mask",
                "card": "mask",
                "ip": "pseudonymise",
                "iban": "mask",
                "mention": "pseudonymise",
            },
            "sensitive_columns": ["user_id"],
        },
    }
}
MIXED = [
    "RT @news: Flu &amp; you: mail <b>Ana@Example.org</b> http://t.co/abc… #health",
    "@clinic call +1 212 555 0187 or 10.0.0.1, see https://x.org/?u=bob@x.org",
    "<p>IBAN DE89 3704 0044 0532 0130 00</p> card 4111-1111-1111-1111 @Bob_2",
    "cafe\u0301 \ufb01 @amy: RT @x: mail me@example.com.",
    "plain text with <url> and <user> and <3",
]


def test_cleaning_cleaned_records_changes_nothing_with_personal_data(
    make_context: MakeContext, key: str
) -> None:
    ctx = make_context("clean", MIXED_DECLARATION)
    user_id = pa.array([5, None, 5, 6, 7], pa.int64())
    table = pa.Table.from_pandas(records(MIXED)).append_column("user_id", user_id)
    write_ingest(ctx, table)
    once, _, first = run_clean(ctx)

    # Clean its own output, read back from Parquet as the stage would.
    write_ingest(ctx, once)
    twice, rejects, second = run_clean(ctx)

    assert twice.equals(once)
    assert rejects.empty
    assert all(kind["matches"] == 0 for kind in second["pii"]["kinds"].values())
    assert second["pii"]["pseudonymised_columns"] == {"user_id": 0}
    assert first["pii"]["pseudonymised_columns"] == {"user_id": 4}
    texts = once.column("text").to_pylist()
    assert texts[1].startswith(f"<mention:{token(key, 'clinic')}> call <phone> or ")
    assert f"<ip:{token(key, '10.0.0.1')}>" in texts[1]
    assert once.column("urls").to_pylist()[1] == [
        f"https://x.org/?u=<email:{token(key, 'bob@x.org')}>"
    ]


def test_tokens_survive_the_url_and_mention_rules() -> None:
    # Tokens made by a pass that kept URLs and mentions, then cleaned by one
    # that replaces both: neither rule takes a token for a URL or a mention.
    conf = CleanConf(
        urls=TokenAction.replace,
        mentions=TokenAction.replace,
        pii=PiiConf(
            actions=PiiActionsConf(
                email=PiiAction.pseudonymise,
                mention=PiiAction.pseudonymise,
                phone=PiiAction.mask,
            )
        ),
    )
    text = "<mention:0123456789abcdef> mail <email:fedcba9876543210> or <phone>"

    assert clean.clean_text(text, conf) == text


def test_dedup_compares_pseudonyms_as_words() -> None:
    pseudonymiser = Pseudonymiser(secrets.token_urlsafe(32))
    conf = CleanConf(pii=PiiConf(actions=PiiActionsConf(email=PiiAction.pseudonymise)))
    texts = [
        "Send your flu story to Ana@Example.org",
        "Send your flu story to ana@example.org",
        "Send your flu story to carl@example.org",
    ]
    kept, _ = clean.clean_frame(records(texts), conf, pseudonymiser)

    deduped, removed = dedup_frame(kept, DedupConf(threshold=0.9, shingle=2))

    # The same address is one token, so the first two are exact duplicates; a
    # different address is a different word, so the third stays.
    assert deduped["record_id"].tolist() == ["r0", "r2"]
    assert removed["reject_reason"].tolist() == ["exact_duplicate"]
    assert deduped["text"].str.contains("<email:", regex=False).all()


# ------------------------------------------------------------------ refusals


def test_a_cleaner_that_pseudonymises_needs_a_pseudonymiser() -> None:
    conf = CleanConf(pii=PiiConf(actions=PiiActionsConf(email=PiiAction.pseudonymise)))

    with pytest.raises(SecretError, match="needs a pseudonymiser"):
        clean.Cleaner(conf)


def test_a_missing_key_names_the_file_and_the_command(
    make_context: MakeContext,
) -> None:
    ctx = make_context(
        "clean", {"clean": {"pii": {"actions": {"email": "pseudonymise"}}}}
    )
    write_ingest(ctx, pa.Table.from_pandas(records(["some text here"])))

    with pytest.raises(SecretError, match=r"conf/secrets/pii\.yaml does not exist"):
        clean.run(ctx)


def test_a_sensitive_column_the_records_lack_is_named(
    make_context: MakeContext,
) -> None:
    ctx = make_context("clean", {"clean": {"pii": {"sensitive_columns": ["author"]}}})
    write_ingest(ctx, pa.Table.from_pandas(records(["some text here"])))

    with pytest.raises(
        SchemaError, match=r"no column 'author'.*clean\.pii\.sensitive_columns"
    ):
        clean.run(ctx)


@pytest.mark.parametrize(
    ("pii", "problem"),
    [
        ({"phone_region": "XX"}, r"clean\.pii\.phone_region'.*'XX'"),
        ({"sensitive_columns": ["text"]}, r"clean\.pii\.sensitive_columns'.*text"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused(
    make_context: MakeContext, pii: dict[str, Any], problem: str
) -> None:
    ctx = make_context("clean", {"clean": {"pii": pii}})

    with pytest.raises(ConfigError, match=problem):
        clean.run(ctx)
