"""What the label stage reports: per task, per function and per model.

All figures come from the vote matrix of a task (rows x functions, label
codes, -1 for an abstention), the final label codes, and, where the task has
a gold column, the gold codes (-1 unknown, -2 a value that is not a label) and
the mask of held-out rows the scores are computed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datakiln.label.models import vote_counts
from datakiln.label.tasks import Task


def share(part: int | np.integer[Any], whole: int | np.integer[Any]) -> float | None:
    """part / whole rounded for a metrics file; None when there is no whole."""
    return round(float(part) / float(whole), 6) if whole else None


def distribution(codes: np.ndarray, labels: tuple[str, ...]) -> dict[str, int]:
    """Records per label, every declared label listed, in declared order."""
    counts = np.bincount(codes[codes >= 0].astype(np.int64), minlength=len(labels))
    return {label: int(n) for label, n in zip(labels, counts, strict=True)}


def task_summary(task: Task, codes: np.ndarray) -> dict[str, Any]:
    labelled = int((codes >= 0).sum())
    return {
        "model": task.model,
        "records": len(codes),
        "labelled": labelled,
        "coverage": share(labelled, len(codes)),
        "labels": distribution(codes, task.labels),
    }


def function_summary(
    task: Task,
    votes: np.ndarray,
    codes: np.ndarray,
    gold: np.ndarray | None = None,
    scored: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per function: how often it votes, overlaps and conflicts with the others,
    agrees with the final label, and, with gold, how often it is right.

    - coverage: share of records it votes on;
    - overlaps: share of records it votes on where another function votes too;
    - conflicts: share of records it votes on where another function votes a
      different label;
    - agreement: share of its votes equal to the final label;
    - holdout: with gold, how it scores on the held-out rows (see `scores`).
    """
    rows = votes.shape[0]
    voted = votes >= 0
    n_voting = voted.sum(axis=1)
    counts = vote_counts(votes, len(task.labels))
    summary: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(task.function_names):
        mine = voted[:, j]
        same = counts[np.flatnonzero(mine), votes[mine, j]]
        entry: dict[str, Any] = {
            "votes": int(mine.sum()),
            "coverage": share(mine.sum(), rows),
            "overlaps": share((n_voting[mine] > 1).sum(), rows),
            "conflicts": share((same < n_voting[mine]).sum(), rows),
            "agreement": share((votes[mine, j] == codes[mine]).sum(), mine.sum()),
        }
        if gold is not None and scored is not None:
            entry["holdout"] = scores(votes[:, j], gold, scored)
        summary[name] = entry
    return summary


def scores(codes: np.ndarray, gold: np.ndarray, scored: np.ndarray) -> dict[str, Any]:
    """How labels `codes` match gold on the scored rows that have gold.

    `coverage` is the share of those rows labelled, `accuracy` the share of the
    labelled ones that are right, and `recall` the share of all of them right.
    """
    rows = scored & (gold != -1)
    labelled = rows & (codes >= 0)
    right = labelled & (codes == gold)
    return {
        "rows": int(rows.sum()),
        "labelled": int(labelled.sum()),
        "correct": int(right.sum()),
        "coverage": share(labelled.sum(), rows.sum()),
        "accuracy": share(right.sum(), labelled.sum()),
        "recall": share(right.sum(), rows.sum()),
    }


def evaluation(
    task: Task,
    model_codes: dict[str, np.ndarray],
    gold: np.ndarray,
    scored: np.ndarray,
) -> dict[str, Any]:
    """How each model recovers gold on the rows whose gold it never saw, and,
    for the task's own model, how well each label is recovered."""
    rows = scored & (gold != -1)
    return {
        "gold": task.gold,
        "holdout": task.holdout,
        "rows": int(rows.sum()),
        "gold_not_a_label": int((rows & (gold == -2)).sum()),
        "models": {
            name: scores(codes, gold, scored) for name, codes in model_codes.items()
        },
        "labels": per_label(task, model_codes[task.model], gold, rows),
    }


def per_label(
    task: Task, codes: np.ndarray, gold: np.ndarray, rows: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per label on the scored rows: its gold count, how many rows the model
    gave it, precision (share of those right) and recall (share of gold found)."""
    out: dict[str, dict[str, Any]] = {}
    for code, label in enumerate(task.labels):
        truly = rows & (gold == code)
        given = rows & (codes == code)
        right = int((truly & given).sum())
        out[label] = {
            "gold": int(truly.sum()),
            "labelled": int(given.sum()),
            "precision": share(right, given.sum()),
            "recall": share(right, truly.sum()),
        }
    return out


def plot_rows(task: Task, codes: np.ndarray) -> list[dict[str, Any]]:
    """Rows of the label distribution plot: task, label, records."""
    counts = distribution(codes, task.labels)
    rows = [{"task": task.name, "label": k, "records": n} for k, n in counts.items()]
    rows.append(
        {"task": task.name, "label": "(none)", "records": int((codes < 0).sum())}
    )
    return rows
