"""The publish stage: Parquet per split, a data card and a manifest.

The local folder `data/published/<dataset>/` is always built first: everything
is written into a temporary sibling folder, which replaces the published one
in a single rename only once complete, so a failed build leaves the last
published dataset exactly as it was. A target (`publish.target`) is a
function that receives the finished folder before that rename: `local` has
nothing more to do; another target (lakeFS) uploads it, and if it fails the
published folder stays as it was.

The Parquet files and manifest.json depend only on the split records, so
publishing the same records twice gives the same bytes. Facts that vary with
the build (the git commit) live in the card, which the manifest does not hash.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import importlib
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import OmegaConf

import datakiln
from datakiln.config import DatasetConf
from datakiln.errors import ConfigError
from datakiln.lakefs.pin import Pin, read_lock
from datakiln.progress import progress
from datakiln.split import SPLIT_COLUMN, SPLITS
from datakiln.stage import StageContext
from datakiln.tables import read_arrow_batches
from datakiln.validate import file_sha256

logger = logging.getLogger(__name__)

INPUT_STAGE = "split"
BATCH_ROWS = 50_000
CARD = "README.md"
MANIFEST = "manifest.json"
# Stages whose metrics the card reports, in build order.
STAGES = ("ingest", "clean", "dedup", "label", "validate", "split")
# Paths a build itself rewrites (lock, metrics, plots, audit log, lakeFS pins
# and refs); changes there do not make the tree dirty.
BUILD_OUTPUTS = ("dvc.lock", "metrics", "plots", "audit", "versions")
GIT_TIMEOUT_S = 10
# How the card and the label counts name records without a label.
UNLABELLED = "(no label)"

# A target receives the finished folder and may return facts for the publish
# metrics (the lakeFS commits), which the stage's audit entry records.
Target = Callable[[StageContext, Path], dict[str, Any] | None]
# Target name -> "module:function". Imported only when used, so a target's
# client library loads only for datasets that publish there.
TARGETS = {
    "local": "datakiln.publish:publish_local",
    "lakefs": "datakiln.lakefs.publish:publish_lakefs",
}


def check_conf(conf: DatasetConf, dataset: str) -> None:
    if conf.publish.target not in TARGETS:
        raise ConfigError(
            f"conf/dataset/{dataset}.yaml: key 'dataset.{dataset}.publish.target': "
            f"unknown target '{conf.publish.target}' (known: {', '.join(TARGETS)}). "
            f"Fix the declaration, then run `datakiln compose`."
        )


def resolve_target(name: str) -> Target:
    module_name, _, function = TARGETS[name].partition(":")
    target: Target = getattr(importlib.import_module(module_name), function)
    return target


def publish_local(ctx: StageContext, folder: Path) -> None:
    """The local target: the folder is swapped in where it belongs."""
    from datakiln.lakefs.versions import write_local_ref

    # dvc.yaml declares a ref file for every dataset; this one says "local".
    final = ctx.paths.published_dir
    shown = final.relative_to(ctx.root) if final.is_relative_to(ctx.root) else final
    write_local_ref(ctx.root, ctx.dataset, shown.as_posix())
    logger.info("publish@%s: published to %s", ctx.dataset, final)


# ------------------------------------------------------------------------ run


def run(ctx: StageContext) -> None:
    check_conf(ctx.conf, ctx.dataset)
    target = resolve_target(ctx.conf.publish.target)
    built, reported = build_local(ctx, target)
    ctx.write_metrics({**publish_metrics(ctx, built), **reported})


@dataclass
class Built:
    """What the local build wrote: the manifest and the label distribution."""

    manifest: dict[str, Any]
    # task -> label -> split -> rows
    labels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def build_local(ctx: StageContext, target: Target) -> tuple[Built, dict[str, Any]]:
    """Write the published folder beside the old one, publish it to the
    target, then swap it in: a target that fails (lakeFS down, a refused
    merge) leaves the last published folder as it was."""
    final = ctx.paths.published_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    staging = final.with_name(f".{final.name}.publish-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        built = write_folder(ctx, staging)
        reported = target(ctx, staging) or {}
        swap_in(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return built, reported


def write_folder(ctx: StageContext, folder: Path) -> Built:
    tasks = [task.name for task in ctx.conf.label.tasks]
    source = ctx.paths.table(INPUT_STAGE)
    rows, labels = write_splits(source, folder, tasks, f"publish {ctx.dataset}")
    manifest = build_manifest(ctx.dataset, folder, rows)
    _write_json(folder / MANIFEST, manifest)
    built = Built(manifest, labels)
    card = render_card(card_facts(ctx, built))
    (folder / CARD).write_text(card, encoding="utf-8")
    return built


# ----------------------------------------------------------------- the splits


def write_splits(
    source: Path, folder: Path, tasks: list[str], desc: str = "publish"
) -> tuple[dict[str, int], dict[str, dict[str, dict[str, int]]]]:
    """Copy the records of each split to `<split>.parquet`, types as stored."""
    schema = pq.read_schema(source)
    if SPLIT_COLUMN not in schema.names:
        raise ConfigError(f"{source}: no '{SPLIT_COLUMN}' column; run split first.")
    kept = schema.remove(schema.get_field_index(SPLIT_COLUMN))
    writers = {
        name: pq.ParquetWriter(folder / f"{name}.parquet", kept) for name in SPLITS
    }
    rows = dict.fromkeys(SPLITS, 0)
    counts: list[pd.DataFrame] = []
    total = max(1, math.ceil(pq.ParquetFile(source).metadata.num_rows / BATCH_ROWS))
    try:
        batches = read_arrow_batches(source, BATCH_ROWS)
        for batch in progress(batches, total, desc, "batches"):
            table = pa.Table.from_batches([batch])
            for name, part in route(table).items():
                writers[name].write_table(part)
                rows[name] += part.num_rows
            present = [t for t in tasks if t in table.column_names]
            counts.append(
                label_counts(table.select([SPLIT_COLUMN, *present]).to_pandas())
            )
    finally:
        for writer in writers.values():
            writer.close()
    return rows, merge_label_counts(counts)


def route(table: pa.Table) -> dict[str, pa.Table]:
    """The records of each split, without the split column; empty splits left out."""
    unknown = set(pc.unique(table[SPLIT_COLUMN]).to_pylist()) - set(SPLITS)
    if unknown:
        raise ConfigError(
            f"unknown split values {sorted(map(str, unknown))}; expected {SPLITS}. "
            f"Rerun `dvc repro split`."
        )
    parts = {}
    for name in SPLITS:
        part = table.filter(pc.equal(table[SPLIT_COLUMN], name)).drop_columns(
            [SPLIT_COLUMN]
        )
        if part.num_rows:
            parts[name] = part
    return parts


def label_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per (task, label, split) in one batch; null labels count as None."""
    parts = []
    for task in [c for c in frame.columns if c != SPLIT_COLUMN]:
        labels = frame[task].astype(object).where(frame[task].notna(), None)
        counted = (
            pd.DataFrame({"label": labels, SPLIT_COLUMN: frame[SPLIT_COLUMN]})
            .groupby(["label", SPLIT_COLUMN], dropna=False)
            .size()
            .rename("rows")
            .reset_index()
        )
        parts.append(counted.assign(task=task))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def merge_label_counts(
    parts: list[pd.DataFrame],
) -> dict[str, dict[str, dict[str, int]]]:
    parts = [p for p in parts if not p.empty]
    if not parts:
        return {}
    merged = (
        pd.concat(parts, ignore_index=True)
        .groupby(["task", "label", SPLIT_COLUMN], dropna=False)["rows"]
        .sum()
    )
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in merged.reset_index().itertuples(index=False):
        task, split = str(row.task), str(getattr(row, SPLIT_COLUMN))
        label = UNLABELLED if pd.isna(row.label) else str(row.label)
        per_split = out.setdefault(task, {}).setdefault(label, dict.fromkeys(SPLITS, 0))
        per_split[split] = int(cast(int, row.rows))
    return out


# -------------------------------------------------------------- the manifest


def build_manifest(dataset: str, folder: Path, rows: dict[str, int]) -> dict[str, Any]:
    """Files with their sha256 and row counts; nothing that varies by build."""
    files = {}
    for name in SPLITS:
        path = folder / f"{name}.parquet"
        files[path.name] = {
            "rows": rows[name],
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
    schema = pq.read_schema(folder / f"{SPLITS[0]}.parquet")
    return {
        "dataset": dataset,
        "files": files,
        "rows": sum(rows.values()),
        "columns": {f.name: str(f.type) for f in schema},
        "card": CARD,
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ the swap


def swap_in(staging: Path, final: Path) -> None:
    """Make `staging` the published folder in one rename; remove the old one."""
    if not final.exists():
        os.rename(staging, final)
        return
    try:
        exchange(staging, final)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
        logger.debug("atomic exchange unsupported here (%s); two renames", exc)
        _swap_by_two_renames(staging, final)
        return
    shutil.rmtree(staging)  # it now holds the previous version


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(
        at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap_by_two_renames(staging: Path, final: Path) -> None:
    # Between the renames no folder is published; `recover` puts the old one
    # back if the process dies there.
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old)


def recover(final: Path) -> None:
    """Undo what a killed publish left: restore the old folder, drop staging."""
    leftovers = sorted(final.parent.glob(f".{final.name}.old-*"))
    if leftovers and not final.exists():
        logger.warning("restoring %s from an interrupted publish", final)
        os.rename(leftovers.pop(), final)
    for path in [*leftovers, *final.parent.glob(f".{final.name}.publish-*")]:
        logger.info("removing %s, left by an interrupted publish", path)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ the card


def card_facts(ctx: StageContext, built: Built) -> dict[str, Any]:
    """Everything the card shows, gathered from the declaration and metrics."""
    # Unresolved: a `${secret:...}` reference stays a name, never a value.
    params = OmegaConf.to_container(ctx.params.dataset[ctx.dataset], resolve=False)
    metrics = {
        stage: json.loads(path.read_text())
        for stage in STAGES
        if (path := ctx.paths.metrics(stage)).exists()
    }
    return {
        "dataset": ctx.dataset,
        "conf": ctx.conf,
        "manifest": built.manifest,
        "labels": built.labels,
        "metrics": metrics,
        "params": params,
        "params_sha256": params_hash(params),
        "git": git_facts(ctx.root),
        "version": datakiln.__version__,
        "pins": read_lock(ctx.root, ctx.dataset),
    }


def params_hash(params: Any) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def git_facts(root: Path) -> dict[str, Any]:
    """The commit the build ran at, and uncommitted changes to tracked files."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None, "changed": []}
    excluded = [f":(exclude){path}" for path in BUILD_OUTPUTS]
    status = _git(
        root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded
    )
    changed = [line[3:] for line in (status or "").splitlines() if line.strip()]
    return {"commit": head.strip(), "dirty": bool(changed), "changed": changed}


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("git %s failed: %s", args[0], exc)
        return None
    return proc.stdout if proc.returncode == 0 else None


def render_card(facts: dict[str, Any]) -> str:
    conf: DatasetConf = facts["conf"]
    sections = [
        _card_head(facts["dataset"], conf),
        _card_files(facts["manifest"]),
        _card_sources(conf, facts.get("pins") or {}),
        _card_stages(facts["metrics"]),
        _card_personal_data(conf, facts["metrics"].get("clean")),
        _card_labels(facts["labels"], conf, facts["metrics"].get("label", {})),
        _card_gates(facts["metrics"]),
        _card_build(facts),
    ]
    return "\n\n".join(s.strip() for s in sections if s.strip()) + "\n"


def _card_head(dataset: str, conf: DatasetConf) -> str:
    text = [f"# {dataset}", conf.description.strip(), conf.publish.description.strip()]
    text.append(f"License: {conf.publish.license}")
    return "\n\n".join(t for t in text if t)


def _card_files(manifest: dict[str, Any]) -> str:
    lines = [
        "## Files",
        "",
        "| file | rows | bytes | sha256 |",
        "|---|---:|---:|---|",
    ]
    for name, entry in manifest["files"].items():
        lines.append(
            f"| {name} | {entry['rows']:,} | {entry['bytes']:,} | "
            f"`{entry['sha256'][:16]}…` |"
        )
    lines += ["", f"`{MANIFEST}` lists each file with its full sha256 and row count."]
    return "\n".join(lines)


def _card_sources(conf: DatasetConf, pins: dict[str, Pin]) -> str:
    lines = ["## Sources", "", "| source | path | format |", "|---|---|---|"]
    for source in conf.sources:
        member = f" (members `{source.member}`)" if source.member else ""
        pin = pins.get(source.name)
        # A lakeFS source was read at the commit its ref stood for when pinned.
        read = (
            f", read at commit `{pin.commit}`" if pin and pin.uri == source.path else ""
        )
        lines.append(
            f"| {source.name} | `{source.path}`{member}{read} | {source.format} |"
        )
    return "\n".join(lines)


def stage_counts(metrics: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """Rows in, rows out and rows removed, read from one stage's metrics."""
    rows_in = _first_int(metrics, "rows_in", "rows", "records")
    rows_out = _first_int(metrics, "rows_out", "rows_total", "rows", "records")
    removed = metrics.get("rejected", metrics.get("rejects"))
    if isinstance(removed, dict):
        removed = sum(v for v in removed.values() if isinstance(v, int))
    if not isinstance(removed, int) and rows_in is not None and rows_out is not None:
        removed = rows_in - rows_out
    return rows_in, rows_out, removed if isinstance(removed, int) else None


def _first_int(metrics: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _card_stages(metrics: dict[str, dict[str, Any]]) -> str:
    lines = [
        "## Records per stage",
        "",
        "| stage | rows in | rows out | removed |",
        "|---|---:|---:|---:|",
    ]
    for stage, report in metrics.items():
        cells = [_count(n) for n in stage_counts(report)]
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _card_personal_data(conf: DatasetConf, clean: dict[str, Any] | None) -> str:
    """Which personal data clean looked for, what it did, and how often."""
    if clean is None:
        return ""
    lines = ["## Personal data", ""]
    pii = clean.get("pii")
    if not pii:
        lines.append(
            "No handling of personal data is declared (`clean.pii`), so the "
            "texts were not searched for it."
        )
        return "\n".join(lines)
    lines += [
        "The clean stage searched the text for personal data and applied the "
        "action declared for each kind: `keep` leaves the value in the text, "
        "`mask` replaces it by `<kind>`, `pseudonymise` by `<kind:token>`, and "
        "`drop` moves the record to the rejects. The build records these "
        "counts, never a value.",
        "",
        *_pii_table(pii),
    ]
    columns = pii.get("pseudonymised_columns") or {}
    if columns:
        listed = ", ".join(f"`{c}` ({_count(n)} values)" for c, n in columns.items())
        lines += [
            "",
            f"Sensitive columns, every value replaced by its pseudonym: {listed}.",
        ]
    kinds = (pii.get("kinds") or {}).values()
    if not columns and all(k.get("action") != "pseudonymise" for k in kinds):
        return "\n".join(lines)
    lines += [
        "",
        "A pseudonym (`<kind:token>` in the text, the token alone in a "
        "sensitive column) is a keyed HMAC-SHA256 of the "
        f"value, with the key `{conf.clean.pii.key}` kept in sops and never "
        "published: one value has one token in every dataset built with that "
        "key, and without the key a token can be neither reversed nor confirmed.",
    ]
    return "\n".join(lines)


def _pii_table(pii: dict[str, Any]) -> list[str]:
    lines = [
        "| kind | action | found | texts holding it | records dropped |",
        "|---|---|---:|---:|---:|",
    ]
    dropped = pii.get("dropped_records") or {}
    for kind, found in (pii.get("kinds") or {}).items():
        action = found.get("action")
        removed = _count(dropped.get(kind, 0)) if action == "drop" else "–"
        lines.append(
            f"| {kind} | {action} | {_count(found.get('matches'))} | "
            f"{_count(found.get('records'))} | {removed} |"
        )
    return lines


def _figure(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "?"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _card_labels(
    labels: dict[str, dict[str, dict[str, int]]],
    conf: DatasetConf,
    label_metrics: dict[str, Any],
) -> str:
    declared = {task.name: task.labels for task in conf.label.tasks}
    lines = ["## Labels"]
    for task, per_label in labels.items():
        scored = (label_metrics.get("tasks") or {}).get(task, {})
        lines += ["", f"### {task}", "", *_card_scores(scored)]
        lines += [
            f"| label | {' | '.join(SPLITS)} | all |",
            "|---|" + "---:|" * (len(SPLITS) + 1),
        ]
        for label in _label_order(per_label, declared.get(task, [])):
            per_split = per_label[label]
            cells = [f"{per_split[s]:,}" for s in SPLITS]
            lines.append(
                f"| {label} | {' | '.join(cells)} | {sum(per_split.values()):,} |"
            )
    return "\n".join(lines) if labels else ""


def _card_scores(task: dict[str, Any]) -> list[str]:
    """How the task was labelled, and how well against gold, from label.json."""
    if not task:
        return []
    lines = [
        f"Labelled by {task.get('model')}: {_count(task.get('labelled'))} of "
        f"{_count(task.get('records'))} records."
    ]
    evaluation = task.get("evaluation")
    if evaluation:
        models = evaluation.get("models") or {}
        scores = ", ".join(
            f"{kind} {_figure(score.get('accuracy'))} on the "
            f"{_percent(score.get('coverage'))} it labels"
            for kind, score in models.items()
        )
        scored = (
            "held-out records whose gold the functions and models never saw"
            if evaluation.get("holdout")
            else "records, with no holdout: the functions and models saw their "
            "gold, so this is agreement, not an estimate of accuracy"
        )
        lines.append(
            f"Accuracy against the gold column `{evaluation.get('gold')}` on "
            f"{_count(evaluation.get('rows'))} {scored}: {scores}."
        )
    return [*lines, ""]


def _label_order(found: dict[str, Any], declared: list[str]) -> list[str]:
    """Declared labels first, in their order; then others; unlabelled last."""
    rest = sorted(set(found) - set(declared) - {UNLABELLED})
    tail = [UNLABELLED] if UNLABELLED in found else []
    return [label for label in declared if label in found] + rest + tail


def _card_gates(metrics: dict[str, dict[str, Any]]) -> str:
    gates = {
        **metrics.get("validate", {}).get("gates", {}),
        **metrics.get("split", {}).get("gates", {}),
    }
    if not gates:
        return ""
    lines = [
        "## Quality gates",
        "",
        "| gate | value | bound | result | detail |",
        "|---|---:|---|---|---|",
    ]
    for name, gate in gates.items():
        result = "passed" if gate.get("passed") else f"failed ({gate.get('action')})"
        lines.append(
            f"| {name} | {_figure(gate.get('value'))} | {gate.get('op')} "
            f"{_figure(gate.get('bound'))} | {result} | {gate.get('detail', '')} |"
        )
    schema = metrics.get("validate", {}).get("schema", {})
    if schema:
        verdict = "passed" if schema.get("passed") else "failed"
        lines += ["", f"Schema checks (pandera): {verdict}."]
    return "\n".join(lines)


# The card's one line that changes with the git commit alone.
_GIT_LINE = "- git commit: "


def same_card_but_for_git(a: str, b: str) -> bool:
    """Whether two cards differ at most in the git commit they were built at:
    the same data, built at another commit, is the same dataset."""

    def rest(card: str) -> list[str]:
        return [line for line in card.splitlines() if not line.startswith(_GIT_LINE)]

    return rest(a) == rest(b)


def _card_build(facts: dict[str, Any]) -> str:
    git = facts["git"]
    if git["commit"] is None:
        commit = "unknown (not built in a git checkout)"
    elif git["dirty"]:
        shown = ", ".join(f"`{p}`" for p in git["changed"][:5])
        commit = f"`{git['commit']}`, with uncommitted changes to {shown}"
    else:
        commit = f"`{git['commit']}` (clean working tree)"
    split = facts["metrics"].get("split", {})
    lines = [
        "## How it was built",
        "",
        f"{_GIT_LINE}{commit}",
        f"- datakiln {facts['version']}",
        f"- params sha256: `{facts['params_sha256']}` (of the dataset's params below)",
    ]
    if split:
        fractions = split.get("fractions", {})
        lines.append(
            f"- split: seed {split.get('seed')}, stratified by "
            f"{split.get('stratify') or 'nothing'}, fractions "
            + ", ".join(f"{name} {fractions.get(name)}" for name in SPLITS)
        )
    dumped = OmegaConf.to_yaml(OmegaConf.create(facts["params"]))
    lines += ["", "Params:", "", "```yaml", dumped.rstrip(), "```"]
    return "\n".join(lines)


# ---------------------------------------------------------------- metrics


def publish_metrics(ctx: StageContext, built: Built) -> dict[str, Any]:
    manifest = built.manifest
    files = manifest["files"]
    return {
        "target": ctx.conf.publish.target,
        "folder": ctx.paths.published_dir.relative_to(ctx.root).as_posix(),
        "rows": {name.removesuffix(".parquet"): f["rows"] for name, f in files.items()},
        "rows_total": manifest["rows"],
        "manifest_sha256": file_sha256(ctx.paths.published_dir / MANIFEST),
    }
