"""The label stage end to end on a small table: outputs, metrics and holdout."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MakeContext

from datakiln.config import compose_conf
from datakiln.errors import ConfigError, SourceError
from datakiln.label import parallel, run
from datakiln.label.draws import record_draws
from datakiln.label.functions import VoteError
from datakiln.label.stage import fit_models, label_frame, vote_batch
from datakiln.label.tasks import compile_tasks
from datakiln.stage import StageContext, context_from_declaration

OUTLETS = ["bbc", "cnn", "npr"]
DOMAINS = {"bbc": "bbc.in", "cnn": "cnn.it", "npr": "n.pr"}


def records(rows: int = 300) -> pa.Table:
    """Tweets of three outlets: most link their outlet's domain, some mention
    it, some mention another outlet, some say nothing about it at all."""
    rng = np.random.default_rng(11)
    outlets = [OUTLETS[i] for i in rng.integers(0, 3, rows)]
    texts, urls = [], []
    for i, outlet in enumerate(outlets):
        kind = i % 5
        linked = [f"http://{DOMAINS[outlet]}/{i}"] if kind in (0, 1, 3) else []
        word = {0: "", 1: f" via @{outlet}", 2: " great news", 3: " via @bbc"}
        texts.append(f"story {i}{word.get(kind, ' awful day')} <url>")
        urls.append(linked)
    return pa.table(
        {
            "record_id": [f"r{i:04d}" for i in range(rows)],
            "text": texts,
            "urls": pa.array(urls, type=pa.list_(pa.string())),
            "outlet": outlets,
            "big_id": pa.array([10**18 + i for i in range(rows)], type=pa.int64()),
        }
    )


DECLARATION: dict[str, Any] = {
    "label": {
        "batch_rows": 64,
        "tasks": [
            {
                "name": "mood",
                "labels": ["negative", "neutral", "positive"],
                "functions": [{"name": "vader", "kind": "sentiment"}],
            },
            {
                "name": "outlet_guess",
                "labels": OUTLETS,
                "model": "dawid_skene",
                "gold": "outlet",
                "holdout": 0.3,
                "functions": [
                    {
                        "name": "link_domain",
                        "kind": "lookup",
                        "column": "urls",
                        "extract": "domain",
                        "table": {d: o for o, d in DOMAINS.items()},
                    },
                    {
                        "name": "mention",
                        "kind": "lookup",
                        "pattern": r"@(\w+)",
                        "table": {o: o for o in OUTLETS},
                    },
                    {
                        "name": "peek_at_gold",
                        "kind": "metadata",
                        "column": "outlet",
                    },
                ],
            },
        ],
    }
}


def staged(
    make_context: MakeContext,
    declaration: dict[str, Any] | None = None,
    table: pa.Table | None = None,
) -> StageContext:
    ctx = make_context("label", copy.deepcopy(declaration or DECLARATION))
    path = ctx.paths.table("dedup")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(records() if table is None else table, path)
    return ctx


def output(ctx: StageContext) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(ctx.paths.table("label")).to_pandas()
    return frame


def metrics(ctx: StageContext) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(ctx.paths.metrics("label").read_text())
    return report


def held_out(ids: pd.Series, share: float, seed: int = 7) -> np.ndarray:
    uniform, _ = record_draws(ids, seed)
    return uniform < share


# ------------------------------------------------------------------- outputs


def test_input_columns_kept_as_stored_and_task_columns_appended(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    table = pq.read_table(ctx.paths.table("label"))
    assert table.schema.names == [
        *records().schema.names,
        "mood",
        "mood_confidence",
        "mood_votes",
        "outlet_guess",
        "outlet_guess_confidence",
        "outlet_guess_votes",
    ]
    assert table.select(records().schema.names).equals(records())
    assert table.schema.field("outlet_guess_confidence").type == pa.float64()


def test_label_is_null_where_no_function_voted(make_context: MakeContext) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    votes = frame["outlet_guess_votes"].map(json.loads)
    silent = votes.map(len) == 0
    assert silent.any() and (~silent).any()
    assert frame.loc[silent, "outlet_guess"].isna().all()
    assert frame.loc[silent, "outlet_guess_confidence"].isna().all()
    assert frame.loc[~silent, "outlet_guess"].notna().all()
    assert frame.loc[~silent, "outlet_guess_confidence"].between(0, 1).all()


def test_votes_name_each_function_that_voted_and_its_label(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    votes = frame["outlet_guess_votes"].map(json.loads)
    linked = frame["urls"].map(len) > 0
    assert votes[linked].map(lambda v: "link_domain" in v).all()
    assert not votes[~linked].map(lambda v: "link_domain" in v).any()
    mentions = frame["text"].str.extract(r"@(\w+)")[0]
    has = mentions.notna()
    assert (votes[has].map(lambda v: v["mention"]) == mentions[has]).all()
    assert set(frame["mood"]) <= {"negative", "neutral", "positive"}


def test_gold_is_hidden_from_functions_on_held_out_rows(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    hidden = held_out(frame["record_id"], 0.3)
    peeked = frame["outlet_guess_votes"].map(lambda v: "peek_at_gold" in json.loads(v))
    assert 0.15 < hidden.mean() < 0.45
    assert not peeked[hidden].any()
    assert peeked[~hidden].all()
    peek = metrics(ctx)["tasks"]["outlet_guess"]["functions"]["peek_at_gold"]
    assert peek["holdout"]["labelled"] == 0
    assert peek["holdout"]["rows"] == hidden.sum()


def test_a_task_reading_another_tasks_gold_sees_it_on_every_row(
    make_context: MakeContext,
) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"].append(
        {
            "name": "source_outlet",
            "labels": OUTLETS,
            "functions": [{"name": "from_id", "kind": "metadata", "column": "outlet"}],
        }
    )
    ctx = staged(make_context, declaration)

    run(ctx)

    frame = output(ctx)
    assert held_out(frame["record_id"], 0.3).any()
    assert (frame["source_outlet"] == frame["outlet"]).all()
    votes = frame["outlet_guess_votes"].map(lambda v: "peek_at_gold" in json.loads(v))
    assert not votes[held_out(frame["record_id"], 0.3)].any()


def test_models_are_scored_against_gold_on_held_out_rows(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    hidden = held_out(frame["record_id"], 0.3)
    evaluation = metrics(ctx)["tasks"]["outlet_guess"]["evaluation"]
    assert set(evaluation["models"]) == {"dawid_skene", "majority"}
    scored = frame[hidden]
    labelled = scored["outlet_guess"].notna()
    right = (scored["outlet_guess"] == scored["outlet"]) & labelled
    own = evaluation["models"]["dawid_skene"]
    assert evaluation["rows"] == len(scored)
    assert own["labelled"] == labelled.sum()
    assert own["accuracy"] == pytest.approx(right.sum() / labelled.sum(), abs=1e-6)
    assert own["recall"] == pytest.approx(right.sum() / len(scored), abs=1e-6)
    for outlet in OUTLETS:
        truly, given = scored["outlet"] == outlet, scored["outlet_guess"] == outlet
        label = evaluation["labels"][outlet]
        assert label["gold"] == truly.sum() and label["labelled"] == given.sum()
        assert label["recall"] == pytest.approx((truly & given).sum() / truly.sum())


def test_function_summary_counts_coverage_overlaps_and_conflicts(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    votes = frame["outlet_guess_votes"].map(json.loads)
    link = votes.map(lambda v: v.get("link_domain"))
    others = votes.map(lambda v: {k: x for k, x in v.items() if k != "link_domain"})
    overlap = link.notna() & (others.map(len) > 0)
    conflict = link.notna() & pd.Series(
        [any(x != lab for x in o.values()) for lab, o in zip(link, others, strict=True)]
    )
    summary = metrics(ctx)["tasks"]["outlet_guess"]["functions"]["link_domain"]
    assert summary["votes"] == link.notna().sum()
    assert summary["coverage"] == pytest.approx(link.notna().mean(), abs=1e-6)
    assert summary["overlaps"] == pytest.approx(overlap.mean(), abs=1e-6)
    assert summary["conflicts"] == pytest.approx(conflict.mean(), abs=1e-6)
    assert conflict.any()


def test_metrics_and_plot_give_the_label_distribution(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)

    run(ctx)

    frame = output(ctx)
    task = metrics(ctx)["tasks"]["outlet_guess"]
    counts = frame["outlet_guess"].value_counts()
    assert task["labels"] == {o: int(counts.get(o, 0)) for o in OUTLETS}
    assert task["coverage"] == pytest.approx(frame["outlet_guess"].notna().mean())
    plot = pd.read_csv(ctx.paths.plot("label_distribution"))
    assert plot.columns.tolist() == ["task", "label", "records"]
    rows = plot[plot["task"] == "outlet_guess"].set_index("label")["records"]
    assert rows.drop("(none)").to_dict() == task["labels"]
    assert rows["(none)"] == frame["outlet_guess"].isna().sum()
    assert set(plot["task"]) == {"mood", "outlet_guess"}


def test_output_does_not_depend_on_batch_size(make_context: MakeContext) -> None:
    small = staged(make_context)
    run(small)
    first = output(small)
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["batch_rows"] = 100_000
    large = staged(make_context, declaration)

    run(large)

    pd.testing.assert_frame_equal(first, output(large))


def test_voting_in_worker_processes_gives_the_same_table(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = staged(make_context)
    run(serial)
    expected = output(serial)
    monkeypatch.setattr(parallel, "MIN_RECORDS", 10)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1})
    assert parallel.worker_count(300) == 2

    forked = staged(make_context)
    run(forked)

    pd.testing.assert_frame_equal(expected, output(forked))


def test_empty_input_gives_empty_table_with_task_columns(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context, table=records().slice(0, 0))

    run(ctx)

    table = pq.read_table(ctx.paths.table("label"))
    assert table.num_rows == 0
    assert "outlet_guess_votes" in table.schema.names
    assert metrics(ctx)["tasks"]["outlet_guess"]["coverage"] is None


# ------------------------------------------------------------ python functions


def test_python_function_is_imported_from_the_project_root(
    make_context: MakeContext,
) -> None:
    declaration = {
        "label": {
            "tasks": [
                {
                    "name": "linked",
                    "labels": ["yes"],
                    "functions": [
                        {
                            "name": "has_url",
                            "kind": "python",
                            "function": "project_labelling_fns:has_url",
                        }
                    ],
                }
            ]
        }
    }
    ctx = staged(make_context, declaration)
    (ctx.root / "project_labelling_fns.py").write_text(
        "def has_url(batch):\n"
        "    return batch['urls'].map(lambda u: 'yes' if len(u) else None)\n"
    )

    run(ctx)

    frame = output(ctx)
    assert (frame["linked"].notna() == (frame["urls"].map(len) > 0)).all()


# ------------------------------------------------------------------- refusals


def test_task_overwriting_an_input_column_is_refused(
    make_context: MakeContext,
) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][1]["name"] = "outlet"
    ctx = staged(make_context, declaration)

    with pytest.raises(
        ConfigError, match=r"tasks\[1\]\.name'.*overwrite the input column 'outlet'"
    ):
        run(ctx)
    assert not ctx.paths.table("label").exists()


def test_function_reading_a_missing_column_is_refused(
    make_context: MakeContext,
) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][1]["functions"][0]["column"] = "links"

    with pytest.raises(
        ConfigError, match=r"tasks\[1\]\.functions\[0\]\.column'.*no column 'links'"
    ):
        run(staged(make_context, declaration))


def test_missing_gold_column_is_refused(make_context: MakeContext) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][1]["gold"] = "source"

    with pytest.raises(ConfigError, match=r"tasks\[1\]\.gold'.*no column 'source'"):
        run(staged(make_context, declaration))


def test_missing_input_names_the_stage_to_run(make_context: MakeContext) -> None:
    ctx = make_context("label", copy.deepcopy(DECLARATION))

    with pytest.raises(SourceError, match=r"dedup\.parquet is missing.*dedup@sample"):
        run(ctx)


def test_bad_declaration_stops_before_reading_data(
    make_context: MakeContext, tmp_path: Path
) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][1]["functions"][1] = {
        "name": "bad",
        "kind": "regex",
        "label": "bbc",
        "pattern": "(",
    }
    ctx = make_context("label", declaration)

    with pytest.raises(ConfigError, match=r"tasks\[1\]\.functions\[1\]\.pattern"):
        run(ctx)


def test_misspelt_function_key_fails_with_dotted_path(tmp_path: Path) -> None:
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][1]["functions"][0]["tabel"] = {}

    with pytest.raises(
        ConfigError, match=r"dataset\.sample\.label\.tasks\[1\]\.functions\[0\]\.tabel"
    ):
        context_from_declaration("label", "sample", tmp_path, declaration)


# ------------------------------------------------------- the repo's datasets


def test_every_declared_label_section_compiles(repo_root: Path) -> None:
    params = compose_conf(repo_root)

    for name in params["dataset"]:
        ctx = context_from_declaration(
            "label", name, repo_root, params["dataset"][name]
        )
        tasks = compile_tasks(ctx.conf.label, name)
        assert tasks, f"{name} declares no label task"


# ------------------------------------------------------- pure batch transforms


def test_label_frame_on_one_batch_equals_the_stage_output(
    make_context: MakeContext,
) -> None:
    ctx = staged(make_context)
    run(ctx)
    tasks = compile_tasks(ctx.conf.label, "sample")
    frame = records().to_pandas()
    votes = vote_batch(frame, tasks, ctx.conf.label.seed)
    fitted = fit_models(tasks, votes)
    models = {task.name: fitted[task.name][task.model] for task in tasks}

    labelled = label_frame(frame.iloc[40:90], tasks, models, ctx.conf.label.seed)

    expected = output(ctx).iloc[40:90]
    columns = [column for task in tasks for column in task.output_columns]
    pd.testing.assert_frame_equal(labelled[columns], expected[columns])


def test_integer_gold_matches_labels_written_as_text(
    make_context: MakeContext,
) -> None:
    table = records()
    codes = {o: i + 1 for i, o in enumerate(OUTLETS)}
    table = table.set_column(
        table.schema.get_field_index("outlet"),
        "outlet",
        pa.array([codes[o] for o in table["outlet"].to_pylist()], type=pa.int64()),
    )
    declaration = copy.deepcopy(DECLARATION)
    task = declaration["label"]["tasks"][1]
    task["labels"] = ["1", "2", "3"]
    task["functions"][0]["table"] = {d: str(codes[o]) for o, d in DOMAINS.items()}
    task["functions"][1]["table"] = {o: str(codes[o]) for o in OUTLETS}
    ctx = staged(make_context, declaration, table)

    run(ctx)

    evaluation = metrics(ctx)["tasks"]["outlet_guess"]["evaluation"]
    assert evaluation["gold_not_a_label"] == 0
    assert evaluation["models"]["majority"]["accuracy"] > 0.6


def test_an_error_in_a_worker_process_reaches_the_stage(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "MIN_RECORDS", 10)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1})
    declaration = copy.deepcopy(DECLARATION)
    declaration["label"]["tasks"][0]["functions"] = [
        {"name": "m", "kind": "metadata", "column": "outlet"}
    ]

    with pytest.raises(VoteError, match=r"'m'.*voted 'bbc' for record r\d+"):
        run(staged(make_context, declaration))
