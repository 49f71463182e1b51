"""Clean: text rules, length and language filters, and the stage's outputs."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MakeContext

from datakiln import clean
from datakiln.clean import clean_frame, clean_text, length_histogram
from datakiln.config import CleanConf, TokenAction, UnicodeForm
from datakiln.errors import ConfigError, SchemaError, SourceError
from datakiln.stage import StageContext

ZWSP, BOM, ZWJ, ZWNJ, WJ = "\u200b", "\ufeff", "\u200d", "\u200c", "\u2060"
FAMILY = f"\U0001f468{ZWJ}\U0001f469{ZWJ}\U0001f467"  # man, woman, girl
PERSIAN = f"می{ZWNJ}خواهم"  # "I want": ZWNJ keeps the prefix unjoined

TWEETS = CleanConf(
    unicode=UnicodeForm.NFKC,
    urls=TokenAction.replace,
    mentions=TokenAction.replace,
    strip_prefixes=["RT @[A-Za-z0-9_]+: ?"],
)


def records(texts: list[Any], **columns: list[Any]) -> pd.DataFrame:
    """Records as ingest writes them: record columns, then the data."""
    n = len(texts)
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "source_name": ["tweets"] * n,
            "source_file": ["tweets.csv"] * n,
            "source_row": list(range(1, n + 1)),
            "text": texts,
            **columns,
        }
    )


# ------------------------------------------------------------------ characters


def test_zero_width_space_and_inner_bom_go_while_zwj_and_zwnj_stay() -> None:
    text = f"Hel{ZWSP}lo wor{BOM}ld {FAMILY} {PERSIAN} {WJ}end"

    cleaned = clean_text(text, CleanConf())

    assert cleaned == f"Hello world {FAMILY} {PERSIAN} end"
    assert ZWJ in cleaned and ZWNJ in cleaned
    assert ZWSP not in cleaned and BOM not in cleaned and WJ not in cleaned


def test_zero_width_characters_go_from_records_too() -> None:
    kept, _ = clean_frame(records([f"{BOM}a{ZWSP}b {FAMILY}"]), CleanConf())

    assert kept["text"].tolist() == [f"ab {FAMILY}"]


def test_control_characters_go_and_bidi_marks_go() -> None:
    text = "Welcome \u200f@jen and\x9d bye\x07"

    assert clean_text(text, CleanConf()) == "Welcome @jen and bye"


def test_nfc_composes_but_keeps_compatibility_characters() -> None:
    text = (
        "cafe\u0301 \ufb01le \uff21"  # e + combining acute, fi ligature, full-width A
    )

    assert (
        clean_text(text, CleanConf(unicode=UnicodeForm.NFC)) == "café \ufb01le \uff21"
    )
    assert clean_text(text, CleanConf(unicode=UnicodeForm.NFKC)) == "café file A"


def test_whitespace_of_every_kind_collapses_to_one_space() -> None:
    text = "  one\ttwo\n\nthree\u00a0four\u2028five\u3000six  "

    assert clean_text(text, CleanConf()) == "one two three four five six"


# ------------------------------------------------------------------------ HTML


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Salt &amp; pepper", "Salt & pepper"),
        ("the literal &amp;amp; entity", "the literal &amp; entity"),
        ("I &lt;3 you", "I <3 you"),
        ("&#8211; and &#x2014; and &eacute;", "– and — and é"),
        ("AT&T and &nosuchentity;", "AT&T and &nosuchentity;"),
    ],
)
def test_html_entities_are_decoded_exactly_once(raw: str, expected: str) -> None:
    assert clean_text(raw, CleanConf()) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Hello</p><p>world</p>", "Hello world"),
        ("line<br>break", "line break"),
        ("<B>bold</B> and <a href='x'>link</a>.", "bold and link."),
        ("<script>var x = 1;</script>text<style>p {}</style>", "text"),
        ("before<!-- a comment -->after", "beforeafter"),
    ],
)
def test_html_tags_are_stripped(raw: str, expected: str) -> None:
    assert clean_text(raw, CleanConf()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Shares of United <UAL.N> fell",
        "x < y and y > z",
        "a<b",
        "Replaced: <url> and <user>",
        "closing </UAL.N> kept as written",
    ],
)
def test_angle_brackets_that_are_not_html_stay(text: str) -> None:
    assert clean_text(text, CleanConf()) == text


def test_html_can_be_left_alone() -> None:
    text = "<b>x</b> &amp;"

    assert clean_text(text, CleanConf(html=False)) == text


def test_a_token_that_is_an_html_tag_is_refused() -> None:
    conf = CleanConf(urls=TokenAction.replace, url_token="<a>")

    with pytest.raises(ConfigError, match=r"clean\.url_token'.*HTML tag"):
        clean.check_conf(conf, "sample")


# ---------------------------------------------------------- URLs and mentions


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            TokenAction.keep,
            "See http://bit.ly/x1, www.example.com/a?b=1. Cut: http://t.co/ab…",
        ),
        (TokenAction.remove, "See , . Cut:"),
        (TokenAction.replace, "See <url>, <url>. Cut: <url>"),
    ],
)
def test_urls_are_kept_removed_or_replaced(action: TokenAction, expected: str) -> None:
    text = "See http://bit.ly/x1, www.example.com/a?b=1. Cut: http://t.co/ab…"

    assert clean_text(text, CleanConf(urls=action)) == expected


@pytest.mark.parametrize("cut", ["http…", "http:…", "http:/…", "http://t.…", "https:…"])
def test_urls_cut_short_by_a_retweet_count_as_urls(cut: str) -> None:
    conf = CleanConf(urls=TokenAction.replace)

    assert clean_text(f"Great read {cut}", conf) == "Great read <url>"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (TokenAction.keep, "Thanks @alice and @bob_2! Mail me@example.com"),
        (TokenAction.remove, "Thanks and ! Mail me@example.com"),
        (TokenAction.replace, "Thanks <user> and <user>! Mail me@example.com"),
    ],
)
def test_mentions_are_kept_removed_or_replaced_but_emails_are_not_mentions(
    action: TokenAction, expected: str
) -> None:
    text = "Thanks @alice and @bob_2! Mail me@example.com"

    assert clean_text(text, CleanConf(mentions=action)) == expected


def test_a_mention_inside_a_kept_url_stays_part_of_it() -> None:
    conf = CleanConf(mentions=TokenAction.replace)

    cleaned = clean_text("by @ann https://medium.com/@ann/post", conf)

    assert cleaned == "by <user> https://medium.com/@ann/post"


def test_retweet_prefixes_are_stripped_however_many() -> None:
    text = "RT @a: RT @b_2: Flu season starts early"

    assert clean_text(text, TWEETS) == "Flu season starts early"


def test_rules_run_until_the_text_is_stable() -> None:
    # Removing the URL uncovers a retweet prefix, which a second pass strips.
    conf = CleanConf(urls=TokenAction.remove, strip_prefixes=["RT @[A-Za-z0-9_]+: ?"])

    assert clean_text("http://x.co/1 RT @a: news", conf) == "news"


def test_urls_column_keeps_the_urls_found_before_replacement() -> None:
    conf = CleanConf(
        columns=["title", "text"], urls=TokenAction.replace, urls_column="urls"
    )
    frame = records(
        [
            "Read http://a.com/1 and http://b.org/x?y=1&amp;z=2 then http://a.com/1",
            "Nothing here",
            "Cut short http://t.co/ab…",
        ],
        title=["From http://title.net/p", None, None],
    )

    kept, _ = clean_frame(frame, conf)

    assert kept["urls"].map(list).tolist() == [
        ["http://title.net/p", "http://a.com/1", "http://b.org/x?y=1&z=2"],
        [],
        [],
    ]
    assert kept["text"][0] == "Read <url> and <url> then <url>"
    assert kept["title"].tolist() == ["From <url>", None, None]


# ------------------------------------------------------------------- filters


def test_length_filters_reject_with_a_reason_and_lose_nothing() -> None:
    conf = CleanConf(min_chars=12, max_chars=40, urls=TokenAction.replace)
    frame = records(
        ["A text of the right length", "short", "x" * 41, None, "tiny http://a.b/c"]
    )

    kept, rejects = clean_frame(frame, conf)

    assert kept["record_id"].tolist() == ["r0"]
    assert dict(zip(rejects["record_id"], rejects["reject_reason"], strict=True)) == {
        "r1": "too_short",
        "r2": "too_long",
        "r3": "missing_text",
        "r4": "too_short",
    }
    assert set(rejects["reject_stage"]) == {"clean"}
    assert set(frame.columns) < set(rejects.columns)
    detail = rejects.set_index("record_id")["reject_detail"]["r4"]
    assert "10 characters after cleaning, fewer than clean.min_chars 12" in detail
    assert "'tiny <url>'" in detail


def test_language_filter_keeps_declared_languages_and_short_texts_as_und() -> None:
    conf = CleanConf(languages=["en"], language_min_chars=20)
    frame = records(
        [
            "The hospital opened a new ward for children with asthma this week.",
            "Das Krankenhaus hat diese Woche eine neue Station eröffnet.",
            "Flu shots today",
        ]
    )

    kept, rejects = clean_frame(frame, conf)

    assert kept.set_index("record_id")["language"].to_dict() == {
        "r0": "en",
        "r2": "und",
    }
    assert rejects["reject_reason"].tolist() == ["wrong_language"]
    assert "'de'" in rejects["reject_detail"][0]


def test_no_language_column_without_a_language_filter() -> None:
    kept, _ = clean_frame(records(["Some text here"]), CleanConf())

    assert "language" not in kept.columns


def test_language_detection_agrees_with_langid_itself() -> None:
    langid = clean._language_model()
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Le médecin a prescrit un traitement contre la grippe saisonnière.",
        "El gobierno anunció nuevas medidas para el sistema de salud.",
        "Gesundheit ist nicht alles, aber ohne Gesundheit ist alles nichts.",
        "من می‌خواهم امروز به بیمارستان بروم",
    ]

    assert [clean.detect_language(t) for t in texts] == [
        langid.classify(t)[0] for t in texts
    ]


def test_an_unknown_language_code_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"clean\.languages'.*\['english'\]"):
        clean.check_conf(CleanConf(languages=["en", "english"]), "sample")


# ------------------------------------------------------------------ idempotence

NASTY = [
    "RT @someone: RT @other: Flu &amp; you: http://t.co/abc… #health",
    f"{BOM}Zero{ZWSP}width {FAMILY} {PERSIAN}",
    "<p>Para&nbsp;one</p><p>two</p> <UAL.N> &lt;3",
    "Ünïcödé cafe\u0301 \ufb01 \uff21\uff22 Å \u212b",
    "@start mid@dle @end. me@example.com www.x.org/a_(b)",
    "   \t\n\u2028  ",
    "http://a.b/c http… https:… RT @x: inner",
    "Tab\tand  spaces\u00a0\u3000and \u200f@rtl mark",
    "<url> <user> <3 << >> <> a<b b>a",
    "😀\u200d\u200d😀 \u200c\u200c double joiners",
]


@pytest.mark.parametrize("text", NASTY)
def test_cleaning_a_cleaned_text_changes_nothing(text: str) -> None:
    once = clean_text(text, TWEETS)

    assert clean_text(once, TWEETS) == once


def test_cleaning_twice_changes_nothing_for_random_mixtures() -> None:
    # Pieces that each trip a rule, glued at random: the rules must not feed
    # each other forever, whatever the neighbours.
    pieces = [
        "RT @a: ",
        "http://t.co/x ",
        "http…",
        "@bob",
        " ",
        "\u200b",
        "\ufeff",
        "\u200d",
        "\u200c",
        "&amp;",
        "<b>",
        "</b>",
        "<br>",
        "e\u0301",
        "\ufb01",
        "\u00a0",
        "\n",
        "word",
        ":",
        ".",
        "…",
        "RT",
        "www.",
        "@",
    ]
    rng = random.Random(20260101)
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 12))) for _ in range(400)]
    conf = CleanConf(
        unicode=UnicodeForm.NFKC,
        urls=TokenAction.remove,
        mentions=TokenAction.replace,
        strip_prefixes=["RT @[A-Za-z0-9_]+: ?", "RT "],
    )

    once = clean.rewrite(pd.Series(texts), clean.text_steps(conf))
    twice = clean.rewrite(once.texts, clean.text_steps(conf))

    assert not once.unstable.any()
    assert twice.texts.tolist() == once.texts.tolist()


def test_cleaning_cleaned_records_changes_nothing() -> None:
    conf = CleanConf(
        unicode=UnicodeForm.NFKC,
        urls=TokenAction.replace,
        urls_column="urls",
        strip_prefixes=["RT @[A-Za-z0-9_]+: ?"],
        languages=["en"],
    )
    frame = records(
        [t for t in NASTY if "&" not in t]
        + ["RT @who: The clinic opens at nine http://c.org/h", None, "tiny"]
    )

    kept, _ = clean_frame(frame, conf)
    again, rejects = clean_frame(kept, conf)

    pd.testing.assert_frame_equal(again, kept)
    assert rejects.empty


# ---------------------------------------------------------------------- plot


def test_length_histogram_covers_every_text_in_round_bins() -> None:
    lengths = Counter({3: 2, 17: 5, 95: 1, 496: 4})

    plot = length_histogram(lengths, bins=40)

    assert list(plot.columns) == ["chars", "records"]
    assert plot["records"].sum() == 12
    width = int(plot["chars"].diff().dropna().unique()[0])
    assert width == 20  # (496 - 3 + 1) / 40 rounded up to 1, 2 or 5 x 10^k
    assert plot["chars"].iloc[0] <= 3 < plot["chars"].iloc[0] + width
    assert plot["chars"].iloc[-1] <= 496 < plot["chars"].iloc[-1] + width


# ----------------------------------------------------------------------- run


def write_ingest(ctx: StageContext, frame: pd.DataFrame) -> None:
    path = ctx.paths.table("ingest")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


DECLARATION: dict[str, Any] = {
    "clean": {
        "urls": "replace",
        "urls_column": "urls",
        "strip_prefixes": ["RT @[A-Za-z0-9_]+: ?"],
        "min_chars": 6,
    }
}


def test_run_writes_records_rejects_metrics_and_length_plot(
    make_context: MakeContext,
) -> None:
    ctx = make_context("clean", DECLARATION)
    frame = records(
        [
            "RT @a: Flu season &amp; you http://t.co/1",
            "http://t.co/2",
            None,
            "A longer text about health",
        ],
        tweet_id=pa.array([2**63 - 1, 1, 2, 3], pa.uint64()).to_pylist(),
    )
    write_ingest(ctx, frame)

    clean.run(ctx)

    kept = pq.read_table(ctx.paths.table("clean"))
    rejects = pq.read_table(ctx.paths.rejects("clean")).to_pandas()
    metrics = json.loads(ctx.paths.metrics("clean").read_text())
    plot = pd.read_csv(ctx.paths.plot("text_length"))
    assert kept.column("text").to_pylist() == [
        "Flu season & you <url>",
        "A longer text about health",
    ]
    assert kept.column("tweet_id").to_pylist() == [2**63 - 1, 3]
    assert rejects["reject_reason"].tolist() == ["too_short", "missing_text"]
    assert metrics["rows_in"] == 4 and metrics["rows_out"] == 2
    assert metrics["rejects"] == {
        "missing_text": 1,
        "too_short": 1,
        "too_long": 0,
        "wrong_language": 0,
    }
    assert metrics["changed"]["html"] == 1 and metrics["changed"]["prefixes"] == 1
    assert metrics["urls_found"] == 2
    assert list(plot.columns) == ["chars", "records"]
    assert plot["records"].sum() == 2


def test_run_with_every_record_rejected_still_writes_typed_tables(
    make_context: MakeContext,
) -> None:
    ctx = make_context("clean", DECLARATION)
    write_ingest(ctx, records(["no", "nope"]))

    clean.run(ctx)

    kept = pq.read_table(ctx.paths.table("clean"))
    assert kept.num_rows == 0
    assert kept.schema.field("urls").type == pa.list_(pa.string())
    assert pq.read_table(ctx.paths.rejects("clean")).num_rows == 2


def test_run_without_ingest_output_names_the_command(
    make_context: MakeContext,
) -> None:
    with pytest.raises(SourceError, match=r"dvc repro ingest@sample"):
        clean.run(make_context("clean", DECLARATION))


def test_run_names_a_missing_column_and_the_key(make_context: MakeContext) -> None:
    ctx = make_context("clean", {"clean": {"columns": ["body"]}})
    write_ingest(ctx, records(["text"]))

    with pytest.raises(SchemaError, match=r"no column 'body'.*clean\.columns"):
        clean.run(ctx)


def test_a_prefix_that_is_not_a_regular_expression_is_refused(
    make_context: MakeContext,
) -> None:
    ctx = make_context("clean", {"clean": {"strip_prefixes": ["ok", "RT ("]}})

    with pytest.raises(ConfigError, match=r"clean\.strip_prefixes\[1\]'"):
        clean.run(ctx)


def test_a_misspelt_action_fails_with_the_dotted_key(
    make_context: MakeContext,
) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.sample\.clean\.urls'.*drop"):
        make_context("clean", {"clean": {"urls": "drop"}})
