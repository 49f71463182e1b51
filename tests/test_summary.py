"""`datakiln summary` on metrics written by this test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelled_records import MakeContext, declaration, records, write_labelled

from datakiln import publish, split, summary, validate
from datakiln.pii import PiiCounts
from datakiln.stage import StageContext
from datakiln.summary import summarise

# Upstream metrics in the shape the ingest, clean, dedup and label stages write.
UPSTREAM: dict[str, dict[str, Any]] = {
    "ingest": {"rows_in": 130, "rows_out": 128, "rejects": 2},
    "clean": {"rows_in": 128, "rows_out": 126, "rejected": 2, "rejects": {}},
    "dedup": {
        "rows_in": 126,
        "rows_out": 120,
        "exact": 4,
        "near": 2,
        "removed_share": 0.047619,
    },
    "label": {
        "records": 120,
        "tasks": {
            "mood": {
                "model": "majority",
                "records": 120,
                "labelled": 90,
                "coverage": 0.75,
                "evaluation": {
                    "gold": "stars",
                    "holdout": 0.2,
                    "rows": 24,
                    "models": {
                        "dawid_skene": {"accuracy": 0.8, "coverage": 0.75},
                        "majority": {"accuracy": 0.9, "coverage": 0.625},
                    },
                },
            }
        },
    },
}


def build(make_context: MakeContext) -> StageContext:
    ctx = make_context("publish", declaration())
    for stage, metrics in UPSTREAM.items():
        path = ctx.paths.metrics(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
    write_labelled(ctx, records(120))
    validate.run(make_context("validate", declaration()))
    split.run(make_context("split", declaration()))
    publish.run(ctx)
    return ctx


def test_summary_shows_rows_duplicates_labels_split_and_where(
    make_context: MakeContext,
) -> None:
    ctx = build(make_context)
    rows = json.loads(ctx.paths.metrics("split").read_text())["rows"]

    text = summarise(ctx.root, ["sample"])

    lines = text.splitlines()
    assert lines[0] == "sample"
    assert (
        "rows        read 130 -> ingest 128 -> clean 126 -> dedup 120 -> label 120 "
        "-> published 120" in text
    )
    assert "duplicates  4 exact and 2 near removed (4.8% of rows)" in text
    assert "labels      mood: 75.0% labelled by majority\n" in text
    assert (
        "\n                accuracy vs gold stars on 24 held-out rows: "
        "majority 0.900, dawid_skene 0.800\n" in text
    )
    assert "gates       3 of 3 passed" in text
    assert (
        f"split       train {rows['train']}, validation {rows['validation']}, "
        f"test {rows['test']} (stratified by mood, seed 42)" in text
    )
    assert "data        data/published/sample/ (train.parquet" in text
    assert "card        data/published/sample/README.md" in text
    assert max(len(line) for line in lines) <= 100


def test_summary_names_warned_and_failed_gates(make_context: MakeContext) -> None:
    ctx = build(make_context)
    report_path = ctx.paths.metrics("validate")
    report = json.loads(report_path.read_text())
    report["gates"]["rows.min"]["passed"] = False
    report["gates"]["conflicting_labels.mood"]["passed"] = False
    report_path.write_text(json.dumps(report))

    text = summarise(ctx.root, ["sample"])

    assert (
        "gates       1 of 3 passed; warned: conflicting_labels.mood; FAILED: rows.min"
        in text
    )


def test_summary_of_every_declared_dataset_says_which_are_not_built(
    make_context: MakeContext,
) -> None:
    ctx = build(make_context)
    (ctx.root / "params.yaml").write_text("dataset:\n  sample: {}\n  other: {}\n")

    text = summarise(ctx.root, [])

    sample, other = text.split("\n\n")
    assert sample.startswith("sample\n")
    assert (
        other == "other\n  not built yet: nothing in metrics/other/ (run `dvc repro`)"
    )


def test_summary_without_params_lists_built_datasets(tmp_path: Path) -> None:
    (tmp_path / "metrics" / "b").mkdir(parents=True)
    (tmp_path / "metrics" / "b" / "ingest.json").write_text('{"rows_out": 5}')

    text = summarise(tmp_path, [])

    assert text.splitlines()[:2] == ["b", "  rows        ingest 5"]
    assert "data        not published yet" in text


def test_summary_says_what_clean_did_with_personal_data(
    make_context: MakeContext,
) -> None:
    ctx = build(make_context)
    counts = PiiCounts(
        actions={
            "email": "pseudonymise",
            "iban": "mask",
            "card": "drop",
            "ip": "mask",
            "phone": "mask",
            "mention": "keep",
        },
        matches={"email": 97, "card": 2, "phone": 4, "mention": 12345},
        records={"email": 97, "card": 1, "phone": 4, "mention": 9787},
        dropped={"card": 1},
        columns={"author_id": 40},
    )
    clean = {**UPSTREAM["clean"], "pii": counts.as_metrics()}
    ctx.paths.metrics("clean").write_text(json.dumps(clean))

    lines = summarise(ctx.root, ["sample"]).splitlines()

    start = lines.index(
        "  pii         mention 12,345 kept, email 97 pseudonymised, phone 4 masked,"
    )
    assert lines[start + 1 : start + 3] == [
        "              card 2 found, 1 record dropped, no iban or ip found,",
        "              author_id 40 values pseudonymised",
    ]
    assert lines[start + 3].startswith("  duplicates")
    assert max(len(line) for line in lines) <= 100


def test_summary_has_no_pii_line_when_clean_looked_for_none(
    make_context: MakeContext,
) -> None:
    ctx = build(make_context)

    assert "  pii " not in summarise(ctx.root, ["sample"])


def test_accuracy_without_a_holdout_does_not_claim_held_out_rows() -> None:
    evaluation = {
        "gold": "stars",
        "holdout": 0.0,
        "rows": 40,
        "models": {"majority": {"accuracy": 1.0, "coverage": 1.0}},
    }

    line = summary._accuracy("majority", evaluation)

    assert line == "accuracy vs gold stars on 40 rows, none held out: majority 1.000"
