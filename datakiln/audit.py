"""The audit log: who built what, from which inputs, with which params.

Each stage that runs appends one entry to `audit/<dataset>.jsonl` (kept in git
beside dvc.lock, outside DVC's outputs so it never makes a stage stale): who
ran it (git identity, CI identity), when, the git commit, the stage, the
SHA-256 of its inputs and outputs as dvc.yaml declares them, the hash of the
dataset's params, the names of the secrets its declaration references (never
their values) and any lakeFS commit its metrics report (the publish stage's
build commit and merge). Entries are chained: each holds the hash of the one
before, and its own hash covers everything in it, so `datakiln audit verify`
finds an entry edited, removed or reordered. The publish stage's entry closes
a build, and the log as it then stands is published beside the dataset, which
anchors its head: a log cut short or rewritten no longer starts with the
published copy. A lakeFS publish that commits new data takes the log into
that commit too, as it stood before the publish entry (which names the
commit, so cannot be inside it).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import getpass
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from datakiln.errors import DatakilnError

if TYPE_CHECKING:
    from datakiln.stage import StageContext

logger = logging.getLogger(__name__)

LOG_DIR = "audit"
PUBLISHED_NAME = "audit.jsonl"
GENESIS = "0" * 64
_CHUNK = 1 << 20


class AuditError(DatakilnError):
    """The audit log cannot be written, or does not verify."""


def log_path(root: Path, dataset: str) -> Path:
    return root / LOG_DIR / f"{dataset}.jsonl"


# ------------------------------------------------------------------ recording


def audited(ctx: StageContext, body: Callable[[StageContext], None]) -> None:
    """Run a stage body and append its entry: ok, or failed with the error."""
    try:
        body(ctx)
    except DatakilnError as exc:
        try:
            record(ctx, status="failed", error=type(exc).__name__)
        except (OSError, DatakilnError) as audit_exc:
            logger.warning("could not record the failed stage: %s", audit_exc)
        raise
    entry = record(ctx)
    logger.info("audit: %s entry %s", log_path(ctx.root, ctx.dataset), entry["seq"])


def record(
    ctx: StageContext, status: str = "ok", error: str | None = None
) -> dict[str, Any]:
    """Append this stage's entry to the dataset's log; publish copies the log."""
    inputs, outputs = stage_files(ctx.root, ctx.stage, ctx.dataset)
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": identity(ctx.root),
        "git": git_state(ctx.root),
        "dataset": ctx.dataset,
        "stage": ctx.stage,
        "status": status,
        "error": error,
        "params_hash": params_hash(ctx.params, ctx.dataset),
        "inputs": hash_paths(ctx.root, inputs),
        "outputs": hash_paths(ctx.root, outputs) if status == "ok" else {},
        "secrets": secret_names(ctx),
        "lakefs": _lakefs_commits(ctx),
        "datakiln": _version(),
    }
    path = log_path(ctx.root, ctx.dataset)
    try:
        written = append(path, entry)
    except OSError as exc:
        raise AuditError(
            f"{path}: cannot append the audit entry of {ctx.stage}@{ctx.dataset} "
            f"({exc.strerror or exc}). Make {LOG_DIR}/ writable and run the stage "
            f"again; its outputs are not recorded as built until then."
        ) from None
    if ctx.stage == "publish" and status == "ok":
        publish_copy(path, ctx.paths.published_dir / PUBLISHED_NAME)
    return written


def append(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Chain `entry` to the last one and append it, under a file lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.seek(0)
        lines = [line for line in log.read().splitlines() if line.strip()]
        last = json.loads(lines[-1]) if lines else None
        chained = {
            **entry,
            "seq": len(lines),
            "prev": last["hash"] if last else GENESIS,
        }
        chained["hash"] = entry_hash(chained)
        log.write(json.dumps(chained, sort_keys=True, ensure_ascii=False) + "\n")
        log.flush()
        os.fsync(log.fileno())
    return chained


def entry_hash(entry: dict[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def publish_copy(log: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(log.read_bytes())
    os.replace(tmp, target)


# ------------------------------------------------------------------ the facts


def identity(root: Path) -> dict[str, Any]:
    """Who ran the build: the git identity, the CI run, the OS user."""
    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):
        user = None
    return {
        "git_name": _git(root, "config", "--get", "user.name"),
        "git_email": _git(root, "config", "--get", "user.email"),
        "user": user,
        "ci": ci_identity(dict(os.environ)),
    }


def ci_identity(env: dict[str, str]) -> dict[str, str | None] | None:
    """The CI system, actor and run, from the variables CI systems set."""
    if env.get("GITHUB_ACTIONS") == "true":
        return {
            "system": "github-actions",
            "actor": env.get("GITHUB_ACTOR"),
            "run": env.get("GITHUB_RUN_ID"),
            "repository": env.get("GITHUB_REPOSITORY"),
        }
    if env.get("GITLAB_CI") == "true":
        return {
            "system": "gitlab-ci",
            "actor": env.get("GITLAB_USER_LOGIN"),
            "run": env.get("CI_PIPELINE_ID"),
            "repository": env.get("CI_PROJECT_PATH"),
        }
    if env.get("CI", "").lower() in ("true", "1", "yes"):
        return {"system": "ci", "actor": None, "run": None, "repository": None}
    return None


def git_state(root: Path) -> dict[str, Any]:
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git(root, "rev-parse", "HEAD"),
        "dirty": None if dirty is None else bool(dirty),
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def params_hash(params: Any, dataset: str) -> str:
    """SHA-256 of the dataset's declaration as params.yaml holds it."""
    from datakiln.secrets.refs import as_tree

    declaration = (as_tree(params).get("dataset") or {}).get(dataset)
    canonical = json.dumps(declaration, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def secret_names(ctx: StageContext) -> list[str]:
    """Secrets a stage run needs: those the dataset's declaration and the
    top-level sections refer to, less the pseudonym key when nothing is
    pseudonymised (the schema's default names it in every declaration, and a
    dataset without personal data to pseudonymise needs no key)."""
    from datakiln.pii import needs_key
    from datakiln.secrets.refs import as_tree, declared

    tree = as_tree(ctx.params)
    declaration = (tree.get("dataset") or {}).get(ctx.dataset)
    if isinstance(declaration, dict) and not needs_key(ctx.conf.clean.pii):
        declaration = copy.deepcopy(declaration)
        (declaration.get("clean") or {}).get("pii", {}).pop("key", None)
        tree = {**tree, "dataset": {ctx.dataset: declaration}}
    return sorted(declared(tree, ctx.dataset))


def _lakefs_commits(ctx: StageContext) -> dict[str, Any]:
    """lakeFS commit ids a stage reports in its metrics (keys lakefs_*)."""
    path = ctx.paths.metrics(ctx.stage)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if str(k).startswith("lakefs")}


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datakiln")
    except PackageNotFoundError:
        return None


def stage_files(root: Path, stage: str, dataset: str) -> tuple[list[str], list[str]]:
    """A stage's deps and outs (with metrics and plots) as dvc.yaml declares them."""
    try:
        pipeline = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return [], []
    spec = (pipeline or {}).get("stages", {}).get(stage) or {}
    spec = spec.get("do", spec)

    def paths(*sections: str) -> list[str]:
        found: list[str] = []
        for section in sections:
            for item in spec.get(section) or []:
                for raw in item if isinstance(item, dict) else [item]:
                    path = str(raw).replace("${key}", dataset)
                    if "${" not in path:
                        found.append(path)
        return found

    return paths("deps"), paths("outs", "metrics", "plots")


def hash_paths(root: Path, paths: list[str]) -> dict[str, str | None]:
    """SHA-256 of each file, and of each folder's sorted (path, hash) list."""
    return {path: _hash_path(root / path) for path in paths}


def _hash_path(path: Path) -> str | None:
    if path.is_file():
        return _hash_file(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(_files(path)):
        relative = file.relative_to(path).as_posix()
        digest.update(f"{relative}\0{_hash_file(file)}\n".encode())
    return digest.hexdigest()


def _files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        skip = "__pycache__" in path.parts or path.name == PUBLISHED_NAME
        if path.is_file() and not skip:
            yield path


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ verifying


@dataclass
class Verdict:
    path: Path
    entries: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)
    anchored: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: Path, published: Path | None = None) -> Verdict:
    """Check every hash and link of a log, and that it extends its published copy."""
    verdict = Verdict(path)
    if not path.is_file():
        verdict.problems.append(f"{path}: no audit log (no stage has run yet)")
        return verdict
    lines = path.read_text(encoding="utf-8").splitlines()
    previous = GENESIS
    for number, line in enumerate(lines, start=1):
        problem = _check_line(line, number, previous)
        if problem:
            verdict.problems.append(f"{path}: {problem}")
            break
        entry = json.loads(line)
        previous = entry["hash"]
        verdict.entries += 1
    verdict.head = previous
    if published is not None and published.is_file():
        verdict.anchored = True
        copy = published.read_text(encoding="utf-8").splitlines()
        if lines[: len(copy)] != copy:
            verdict.problems.append(
                f"{path}: does not begin with the {len(copy)} entries published in "
                f"{published}: entries were removed from its end, or it was "
                f"rewritten. Restore it from git (`git log -p -- {path}`)."
            )
    return verdict


def _check_line(line: str, number: int, previous: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return f"line {number} is not a JSON entry: the log was edited by hand"
    if not isinstance(entry, dict) or "hash" not in entry:
        return f"line {number} is not an audit entry: the log was edited by hand"
    if entry.get("seq") != number - 1:
        return (
            f"line {number} holds entry {entry.get('seq')} where entry {number - 1} "
            f"belongs: entries were removed or reordered"
        )
    if entry.get("prev") != previous:
        return (
            f"entry {number - 1} (line {number}) does not follow the entry before "
            f"it: an entry was removed, replaced or reordered"
        )
    if entry_hash(entry) != entry["hash"]:
        return (
            f"entry {number - 1} (line {number}) was edited: its hash does not "
            f"match its contents"
        )
    return None


# ------------------------------------------------------------------ the command


def cmd_verify(args: argparse.Namespace) -> int:
    root = Path.cwd()
    datasets = args.datasets or sorted(p.stem for p in (root / LOG_DIR).glob("*.jsonl"))
    if not datasets:
        print(f"no audit logs under {LOG_DIR}/ yet; they appear after a build")
        return 0
    failed = 0
    for dataset in datasets:
        from datakiln.paths import DatasetPaths

        published = DatasetPaths(root, dataset).published_dir / PUBLISHED_NAME
        verdict = verify(log_path(root, dataset), published)
        shown = log_path(root, dataset).relative_to(root)
        if verdict.ok:
            anchor = "; its published copy matches" if verdict.anchored else ""
            print(
                f"{shown}: {verdict.entries} entries, chain intact, head "
                f"{verdict.head[:16]}{anchor}"
            )
        else:
            failed += 1
            for problem in verdict.problems:
                print(problem.replace(str(root) + os.sep, ""))
    return 1 if failed else 0


def add_parser(sub: Any) -> None:
    """Register `datakiln audit verify` on the main parser's subcommands."""
    parser = sub.add_parser("audit", help="the build audit log in audit/")
    commands = parser.add_subparsers(dest="audit_command", required=True)
    p = commands.add_parser(
        "verify", help="check each log's hash chain and its published copy"
    )
    p.add_argument("datasets", nargs="*", help="default: every log in audit/")
    p.set_defaults(func=cmd_verify)
