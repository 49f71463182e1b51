"""`datakiln summary`: what the last build made, read from metrics/<dataset>/.

A few plain lines per dataset, meant for a terminal or a CI log: rows per
stage, personal data found by kind and what was done with it, duplicates
removed, label coverage and accuracy against gold, gates, split sizes, and
where the data and its card are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from datakiln.config import PARAMS_FILE
from datakiln.paths import DatasetPaths
from datakiln.publish import CARD, stage_counts

logger = logging.getLogger(__name__)

STAGES = ("ingest", "clean", "dedup", "label", "validate", "split", "publish")
SPLITS = ("train", "validation", "test")
# Stages that pass every row on; the rows line leaves them out.
KEEP_ALL_ROWS = ("validate", "split")
INDENT = "  "
LABEL_WIDTH = 12
# Lines are kept under 100 columns; longer text continues on the next line.
TEXT_WIDTH = 84
# What each pii action did, as the summary says it.
PII_DONE = {"keep": "kept", "mask": "masked", "pseudonymise": "pseudonymised"}


def summarise(root: Path, datasets: list[str]) -> str:
    """The summary of each dataset (every declared one when none are named)."""
    names = datasets or declared_datasets(root)
    if not names:
        return f"no datasets declared in {PARAMS_FILE} and none built in metrics/"
    return "\n\n".join(dataset_summary(root, name) for name in names)


def declared_datasets(root: Path) -> list[str]:
    params = root / PARAMS_FILE
    if params.exists():
        loaded = OmegaConf.to_container(OmegaConf.load(params))
        declared = loaded.get("dataset") if isinstance(loaded, dict) else None
        return [str(name) for name in declared or {}]
    metrics = root / "metrics"
    return (
        sorted(p.name for p in metrics.iterdir() if p.is_dir())
        if metrics.is_dir()
        else []
    )


def dataset_summary(root: Path, dataset: str) -> str:
    paths = DatasetPaths(root, dataset)
    metrics = read_metrics(paths)
    if not metrics:
        folder = paths.metrics("ingest").parent.relative_to(root).as_posix()
        return (
            f"{dataset}\n{INDENT}not built yet: nothing in {folder}/ (run `dvc repro`)"
        )
    lines = [
        ("rows", _rows_line(metrics)),
        *_pii_lines(metrics.get("clean")),
        ("duplicates", _dedup_line(metrics.get("dedup"))),
        *_label_lines(metrics.get("label")),
        ("gates", _gates_line(metrics)),
        ("split", _split_line(metrics.get("split"))),
        *_where_lines(root, paths, metrics.get("publish")),
    ]
    shown = [f"{INDENT}{name:<{LABEL_WIDTH}}{text}" for name, text in lines if text]
    return "\n".join([dataset, *shown])


def read_metrics(paths: DatasetPaths) -> dict[str, dict[str, Any]]:
    found = {}
    for stage in STAGES:
        path = paths.metrics(stage)
        if path.exists():
            found[stage] = json.loads(path.read_text())
    return found


def _rows_line(metrics: dict[str, dict[str, Any]]) -> str:
    steps = []
    for stage, report in metrics.items():
        if stage in KEEP_ALL_ROWS:
            continue
        rows_in, rows_out, _ = stage_counts(report)
        if stage == "ingest" and rows_in is not None and rows_in != rows_out:
            steps.append(f"read {rows_in:,}")
        if rows_out is not None:
            name = "published" if stage == "publish" else stage
            steps.append(f"{name} {rows_out:,}")
    return " -> ".join(steps)


def _pii_lines(report: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Personal data by kind, most found first, and what clean did with it."""
    pii = (report or {}).get("pii")
    if not pii:
        return []
    kinds = pii.get("kinds") or {}
    dropped = pii.get("dropped_records") or {}
    found = sorted(
        (kind for kind, n in kinds.items() if n.get("matches")),
        key=lambda kind: -int(kinds[kind]["matches"]),
    )
    parts = []
    for kind in found:
        action, matches = kinds[kind].get("action"), kinds[kind]["matches"]
        if action == "drop":
            records = dropped.get(kind, 0)
            plural = "" if records == 1 else "s"
            parts.append(
                f"{kind} {_count(matches)} found, {_count(records)} record{plural} "
                f"dropped"
            )
        else:
            parts.append(f"{kind} {_count(matches)} {PII_DONE.get(action, action)}")
    none = [kind for kind in kinds if kind not in found]
    if none:
        parts.append(f"no {_or_list(none)} found")
    for column, values in (pii.get("pseudonymised_columns") or {}).items():
        parts.append(f"{column} {_count(values)} values pseudonymised")
    return [("pii" if i == 0 else "", text) for i, text in enumerate(_wrap(parts))]


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _wrap(parts: list[str], width: int = TEXT_WIDTH) -> list[str]:
    """`parts` joined by commas, a new line before a part that would not fit."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += f", {part}"
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return lines


def _dedup_line(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    exact, near = report.get("exact"), report.get("near")
    share = report.get("removed_share")
    text = f"{_count(exact)} exact and {_count(near)} near removed"
    return f"{text} ({_percent(share)} of rows)" if share is not None else text


def _label_lines(report: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not report:
        return []
    lines: list[tuple[str, str]] = []
    for name, task in (report.get("tasks") or {}).items():
        coverage = _percent(task.get("coverage"))
        lines.append(("", f"{name}: {coverage} labelled by {task.get('model')}"))
        evaluation = task.get("evaluation")
        if evaluation:
            lines.append(("", f"{INDENT}{_accuracy(task.get('model'), evaluation)}"))
    if lines:
        lines[0] = ("labels", lines[0][1])
    return lines


def _accuracy(model: str | None, evaluation: dict[str, Any]) -> str:
    """Accuracy of each model against gold, the task's own model first."""
    models = evaluation.get("models") or {}
    order = sorted(models, key=lambda kind: (kind != model, kind))
    scores = ", ".join(
        f"{kind} {_fraction(models[kind].get('accuracy'))}" for kind in order
    )
    scored = "held-out rows" if evaluation.get("holdout") else "rows, none held out"
    return (
        f"accuracy vs gold {evaluation.get('gold')} on "
        f"{_count(evaluation.get('rows'))} {scored}: {scores}"
    )


def _gates_line(metrics: dict[str, dict[str, Any]]) -> str:
    gates = {
        **(metrics.get("validate") or {}).get("gates", {}),
        **(metrics.get("split") or {}).get("gates", {}),
    }
    if not gates:
        return ""
    passed = [n for n, g in gates.items() if g.get("passed")]
    warned = [
        n for n, g in gates.items() if not g.get("passed") and g.get("action") == "warn"
    ]
    failed = [
        n for n, g in gates.items() if not g.get("passed") and g.get("action") != "warn"
    ]
    text = f"{len(passed)} of {len(gates)} passed"
    if warned:
        text += f"; warned: {', '.join(warned)}"
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    return text


def _split_line(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    rows = report.get("rows") or {}
    sizes = ", ".join(f"{name} {_count(rows.get(name))}" for name in SPLITS)
    stratify = report.get("stratify")
    by = f" (stratified by {stratify}, seed {report.get('seed')})" if stratify else ""
    return sizes + by


def _where_lines(
    root: Path, paths: DatasetPaths, report: dict[str, Any] | None
) -> list[tuple[str, str]]:
    if not report:
        return [("data", "not published yet")]
    folder = paths.published_dir
    card = folder / CARD
    shown = folder.relative_to(root).as_posix()
    lines = [("data", f"{shown}/ ({', '.join(f'{s}.parquet' for s in SPLITS)})")]
    lines.append(("card", card.relative_to(root).as_posix()))
    target = report.get("target")
    if target and target != "local":
        lines.append(("target", str(target)))
    return lines


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "?"


def _fraction(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"
