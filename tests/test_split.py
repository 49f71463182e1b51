"""Deterministic, stratified train/validation/test by duplicate group."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from labelled_records import (
    MakeContext,
    declaration,
    grouped_records,
    records,
    write_labelled,
)

from datakiln import split, validate
from datakiln.config import SplitConf
from datakiln.errors import ConfigError, GateError
from datakiln.stage import StageContext

SIZES = {"good": 500, "bad": 300, "meh": 200}


def decl(**split_conf: Any) -> dict[str, Any]:
    label = declaration()["label"]
    label["tasks"][0]["labels"] = ["good", "bad", "meh"]
    return declaration(label=label, split={"stratify": "mood", **split_conf})


def build(
    make_context: MakeContext, frame: pd.DataFrame, **split_conf: Any
) -> StageContext:
    """Validate and split `frame`; return the split stage's context."""
    declared = decl(**split_conf)
    write_labelled(make_context("validate", declared), frame)
    validate.run(make_context("validate", declared))
    ctx = make_context("split", declared)
    split.run(ctx)
    return ctx


def output(ctx: StageContext) -> pd.DataFrame:
    return pq.read_table(ctx.paths.table("split")).to_pandas()


def assignment(ctx: StageContext) -> pd.Series:
    frame = output(ctx)
    return frame.set_index("record_id")["split"].sort_index()


def test_every_duplicate_group_lands_in_exactly_one_split(
    make_context: MakeContext,
) -> None:
    frame = grouped_records(SIZES)

    out = output(build(make_context, frame))

    splits_per_group = out.groupby("dup_group")["split"].nunique()
    assert (splits_per_group == 1).all()
    assert out["dup_group"].duplicated().any()  # the groups are real
    assert set(out["split"]) == {"train", "validation", "test"}


def test_strata_proportions_hold_within_tolerance(make_context: MakeContext) -> None:
    frame = grouped_records(SIZES)

    out = output(build(make_context, frame, train=0.7, validation=0.2, test=0.1))

    shares = pd.crosstab(out["mood"], out["split"], normalize="index")
    wanted = {"train": 0.7, "validation": 0.2, "test": 0.1}
    for label, rows in SIZES.items():
        tolerance = 3 / rows  # one group of at most 3 rows at each cut
        for name, fraction in wanted.items():
            assert abs(shares.loc[label, name] - fraction) <= tolerance, (label, name)


def test_same_input_gives_the_same_split(make_context: MakeContext) -> None:
    frame = grouped_records(SIZES)

    first = assignment(build(make_context, frame))
    second = assignment(build(make_context, frame))

    pd.testing.assert_series_equal(first, second)


def test_changing_the_seed_changes_the_split(make_context: MakeContext) -> None:
    frame = grouped_records(SIZES)

    first = assignment(build(make_context, frame, seed=1))
    second = assignment(build(make_context, frame, seed=2))

    moved = (first != second).mean()
    assert moved > 0.1


def test_split_does_not_depend_on_row_order_or_batch_size(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = assignment(build(make_context, grouped_records(SIZES, seed=0)))
    monkeypatch.setattr(split, "BATCH_ROWS", 37)

    second = assignment(build(make_context, grouped_records(SIZES, seed=1)))

    pd.testing.assert_series_equal(first, second)


def test_output_keeps_every_column_and_its_stored_type(
    make_context: MakeContext,
) -> None:
    ctx = make_context("validate", decl())
    table = pa.Table.from_pandas(records(50), preserve_index=False)
    big = pa.array([10**19 + i if i % 7 else None for i in range(50)], pa.uint64())
    table = table.append_column("tweet_id", big)
    ctx.paths.table("label").parent.mkdir(parents=True)
    pq.write_table(table, ctx.paths.table("label"))
    validate.run(ctx)
    ctx = make_context("split", decl())

    split.run(ctx)

    written = pq.read_table(ctx.paths.table("split"))
    assert written.schema.remove(written.schema.get_field_index("split")).equals(
        table.schema
    )
    assert written.drop_columns(["split"]).equals(table)


def test_metrics_report_rows_groups_strata_and_the_leak_gate(
    make_context: MakeContext,
) -> None:
    frame = grouped_records(SIZES)

    ctx = build(make_context, frame)

    metrics = json.loads(ctx.paths.metrics("split").read_text())
    out = output(ctx)
    assert metrics["rows"] == out["split"].value_counts().to_dict()
    assert metrics["rows_total"] == len(frame)
    assert (
        metrics["groups"]["train"]
        == out.loc[out["split"] == "train", "dup_group"].nunique()
    )
    assert metrics["strata"]["meh"]["rows"] == SIZES["meh"]
    assert metrics["gates"]["dup_group_leak"]["value"] == 0
    assert metrics["gates"]["dup_group_leak"]["passed"] is True


def test_unlabelled_groups_form_a_stratum_of_their_own(
    make_context: MakeContext,
) -> None:
    frame = records(400, ("good", None, "bad", "good"))

    ctx = build(make_context, frame)

    strata = json.loads(ctx.paths.metrics("split").read_text())["strata"]
    assert strata[split.UNLABELLED]["rows"] == 100
    assert abs(strata[split.UNLABELLED]["train"] - 0.8) <= 0.01


def test_without_stratify_the_whole_table_is_one_stratum(
    make_context: MakeContext,
) -> None:
    declared = declaration(split={"stratify": None, "seed": 5})
    write_labelled(make_context("validate", declared), records(100))
    validate.run(make_context("validate", declared))
    ctx = make_context("split", declared)

    split.run(ctx)

    metrics = json.loads(ctx.paths.metrics("split").read_text())
    assert metrics["rows"] == {"train": 80, "validation": 10, "test": 10}


def test_groups_in_several_splits_are_found() -> None:
    pairs = pd.DataFrame(
        {
            "group": ["a", "a", "b", "c", "c"],
            "split": ["train", "test", "train", "test", "test"],
        }
    )

    assert list(split.groups_in_several_splits(pairs).index) == ["a"]


def test_a_group_takes_the_stratum_of_most_of_its_rows() -> None:
    counts = pd.DataFrame(
        {"group": ["g", "g", "h"], "label": ["bad", "good", "good"], "rows": [2, 1, 1]}
    )

    allocation = split.allocate(counts, SplitConf())

    assert allocation.set_index("group")["stratum"].to_dict() == {
        "g": "bad",
        "h": "good",
    }
    assert allocation.set_index("group")["rows"].to_dict() == {"g": 3, "h": 1}


def test_group_key_falls_back_to_the_record_id() -> None:
    frame = pd.DataFrame({"record_id": ["a", "b"], "dup_group": ["x", None]})

    assert split.group_keys(frame).tolist() == ["x", "b"]
    assert split.group_keys(frame[["record_id"]]).tolist() == ["a", "b"]


def test_refuses_records_whose_validation_failed(make_context: MakeContext) -> None:
    declared = decl()
    declared["validate"] = {"gates": {"min_rows": 1000}}
    write_labelled(make_context("validate", declared), records(10))
    with pytest.raises(GateError):
        validate.run(make_context("validate", declared))

    with pytest.raises(
        GateError, match=r"metrics/sample/validate\.json: validation failed .*rows\.min"
    ):
        split.run(make_context("split", declared))


def test_refuses_records_that_were_not_validated(make_context: MakeContext) -> None:
    write_labelled(make_context("split", decl()), records(10))

    with pytest.raises(
        GateError, match=r"validate\.json is missing.*dvc repro validate@sample"
    ):
        split.run(make_context("split", decl()))


def test_refuses_records_changed_since_validation(make_context: MakeContext) -> None:
    build(make_context, records(10))
    write_labelled(make_context("split", decl()), records(11))

    with pytest.raises(GateError, match=r"written for another label\.parquet"):
        split.run(make_context("split", decl()))


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"train": 0.8, "validation": 0.1, "test": 0.2},
            r"dataset\.sample\.split': train, validation and test must add up to 1",
        ),
        ({"test": -0.1, "train": 1.0}, r"split\.test': a share must be in \[0, 1\]"),
        ({"stratify": "topic"}, r"split\.stratify': no label task 'topic'"),
    ],
)
def test_bad_split_declaration_names_the_dotted_key(
    make_context: MakeContext, conf: dict[str, Any], message: str
) -> None:
    ctx = make_context("split", decl(**conf))

    with pytest.raises(ConfigError, match=r"conf/dataset/sample\.yaml.*" + message):
        split.run(ctx)
