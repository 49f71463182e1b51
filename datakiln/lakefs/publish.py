"""The `lakefs` publish target: a branch per build, merged after the gates.

The publish stage builds `data/published/<dataset>/` first and hands the
finished folder to `publish_lakefs`, which:

1. refuses a target branch with uncommitted changes, listing them;
2. makes (or reuses, after a crash) the build branch
   `<dataset>-<git commit>-<params hash>` from the target branch;
3. uploads only the objects whose content changed under
   `datasets/<dataset>/`, and deletes objects the folder no longer has;
4. commits with metadata: git commit, dataset, params hash, row counts and
   datakiln version;
5. merges into the target branch when every gate passed and the dataset does
   not ask for review; a merge that would conflict is refused with the paths
   listed, and nothing is merged;
6. writes `versions/<dataset>.ref.yaml`, tracked by git, naming the repository,
   branches and commits, so a pull request shows which lakeFS commit a
   dataset version is.

Publishing data the target branch already holds makes no commit at all. A
commit that is made anyway carries the audit log as it stands (every entry up
to the stage before publish) as `audit.jsonl` beside the data. The log is not
part of the comparison, since it grows with every run; the publish stage's own
entry, which names the lakeFS commits it returns, is in the local copy only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakefs.exceptions import ConflictException
from omegaconf import OmegaConf

import datakiln
from datakiln.audit import PUBLISHED_NAME, log_path, publish_copy
from datakiln.errors import ConfigError, LakeFSError
from datakiln.lakefs.client import LakeFS, connect, object_metadata
from datakiln.lakefs.sync import UploadHook, remote_state, scan_folder, sync_folder
from datakiln.lakefs.versions import (
    AWAITING_REVIEW,
    MERGED,
    PublishRef,
    read_ref,
    write_ref,
)
from datakiln.stage import StageContext

logger = logging.getLogger(__name__)

_SHOWN_PATHS = 20


class PublishRefused(LakeFSError):
    """lakeFS is in a state a publish must not change (dirty or conflicting)."""


@dataclass(frozen=True)
class Build:
    """What identifies one build of a dataset, and what its commit records."""

    dataset: str
    git_commit: str | None
    params_hash: str
    rows: dict[str, int]

    @property
    def branch(self) -> str:
        git = (self.git_commit or "nogit")[:10]
        return _branch_name(f"{self.dataset}-{git}-{self.params_hash[:8]}")

    def metadata(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "dataset": self.dataset,
            "git_commit": self.git_commit or "unknown",
            "params_hash": self.params_hash,
            "datakiln_version": datakiln.__version__,
            "rows_total": sum(self.rows.values()),
        }
        values.update({f"rows_{name}": count for name, count in self.rows.items()})
        return object_metadata(values)


# ------------------------------------------------------------------ the target


def publish_lakefs(ctx: StageContext, folder: Path) -> dict[str, Any]:
    """The publish stage's `lakefs` target; returns the commits for its metrics,
    from which the stage's audit entry takes them."""
    conf = ctx.conf.publish
    if not conf.lakefs_repo:
        raise ConfigError(
            f"conf/dataset/{ctx.dataset}.yaml: key "
            f"'dataset.{ctx.dataset}.publish.lakefs_repo' is needed for target "
            f"lakefs. Name the lakeFS repository to publish to."
        )
    build = build_of(ctx, folder)
    failed = failed_gates(ctx)
    if failed:
        logger.warning(
            "publish@%s: gates %s did not pass; the build branch waits for review",
            ctx.dataset,
            ", ".join(failed),
        )
    log = log_path(ctx.root, ctx.dataset)
    if log.is_file():
        publish_copy(log, folder / PUBLISHED_NAME)
    ref = publish_folder(
        connect(),
        folder,
        build,
        repo=conf.lakefs_repo,
        target_branch=conf.lakefs_branch,
        merge=not conf.review and not failed,
        previous=read_ref(ctx.root, ctx.dataset),
    )
    write_ref(ctx.root, ref)
    logger.info("publish@%s: %s (%s)", ctx.dataset, ref.uri, ref.status)
    return {
        "lakefs_repository": ref.repository,
        "lakefs_branch": ref.target_branch,
        "lakefs_build_branch": ref.build_branch,
        "lakefs_commit": ref.commit,
        "lakefs_merge_commit": ref.merge_commit,
        "lakefs_status": ref.status,
    }


def build_of(ctx: StageContext, folder: Path) -> Build:
    # Reuse the publish stage's own definitions, so the card and the lakeFS
    # commit agree on the git commit and the params hash.
    from datakiln.publish import MANIFEST, git_facts, params_hash

    manifest = json.loads((folder / MANIFEST).read_text())
    rows = {
        name.removesuffix(".parquet"): int(entry["rows"])
        for name, entry in manifest["files"].items()
    }
    # Unresolved, as the card shows it: secret references stay names.
    params = OmegaConf.to_container(ctx.params.dataset[ctx.dataset], resolve=False)
    git_commit = git_facts(ctx.root)["commit"]
    return Build(ctx.dataset, git_commit, params_hash(params), rows)


def failed_gates(ctx: StageContext) -> list[str]:
    """Gates that did not pass, even those that only warn."""
    path = ctx.paths.metrics("validate")
    if not path.exists():
        return ["validate (no report; run validate first)"]
    report = json.loads(path.read_text())
    failed = [
        name for name, gate in report.get("gates", {}).items() if not gate["passed"]
    ]
    if not report.get("schema", {}).get("passed", True):
        failed.insert(0, "schema")
    return failed


# ----------------------------------------------------------------- the publish


def publish_folder(
    lake: LakeFS,
    folder: Path,
    build: Build,
    repo: str,
    target_branch: str,
    merge: bool,
    previous: PublishRef | None = None,
    on_upload: UploadHook | None = None,
) -> PublishRef:
    """Publish `folder` to `repo` through a build branch; see the module doc."""
    prefix = f"datasets/{build.dataset}/"
    lake.require_repository(repo)
    target_head = lake.branch_head(repo, target_branch)
    if target_head is None:
        raise LakeFSError(
            f"lakefs://{repo}/{target_branch}: no such branch to publish into. Create "
            f"it, or set publish.lakefs_branch to an existing branch."
        )
    refuse_dirty(lake, repo, target_branch)

    files = dataset_files(folder)
    if _holds(lake, repo, target_branch, prefix, folder, files):
        return _unchanged(lake, build, repo, target_branch, prefix, previous)
    carried = {name for name in CARRIED if (folder / name).is_file()}

    branch = build.branch
    held = False
    if lake.branch_head(repo, branch) is None:
        lake.create_branch(repo, branch, target_branch)
    else:
        logger.info(
            "reusing build branch %s of %s (left by an earlier run)", branch, repo
        )
        # A branch that holds this build already (awaiting review, say) gets
        # no upload: its audit log alone must not make a new commit.
        held = _holds(lake, repo, branch, prefix, folder, files)
    if not held:
        sync_folder(
            lake,
            repo,
            branch,
            folder,
            prefix,
            mirror=True,
            on_upload=on_upload,
            only=files | carried,
        )
    commit = _commit(lake, repo, branch, build)

    if lake.is_ancestor(repo, commit, target_branch):
        # An earlier run merged this very commit; nothing more to do.
        merge_commit = _merged_at(lake, repo, target_branch, commit, previous)
        return PublishRef(
            build.dataset,
            repo,
            target_branch,
            prefix,
            branch,
            commit,
            merge_commit,
            MERGED,
        )
    if not merge:
        logger.info(
            "lakefs://%s/%s awaits review: merge it into %s when satisfied",
            repo,
            branch,
            target_branch,
        )
        return PublishRef(
            build.dataset,
            repo,
            target_branch,
            prefix,
            branch,
            commit,
            None,
            AWAITING_REVIEW,
        )
    merge_commit = merge_build(lake, repo, branch, commit, target_branch, build)
    return PublishRef(
        build.dataset, repo, target_branch, prefix, branch, commit, merge_commit, MERGED
    )


def refuse_dirty(lake: LakeFS, repo: str, branch: str) -> None:
    dirty = lake.uncommitted(repo, branch)
    if dirty:
        raise PublishRefused(
            f"lakefs://{repo}/{branch} has uncommitted changes, so nothing was "
            f"published or merged:{_listing(dirty)}\nCommit or reset them (lakectl "
            f"branch reset lakefs://{repo}/{branch}), then run the publish again."
        )


def merge_build(
    lake: LakeFS, repo: str, branch: str, commit: str, target: str, build: Build
) -> str:
    """Merge the build branch into `target`, or refuse with the conflicting paths."""
    refuse_dirty(lake, repo, target)
    conflicts = conflicting_paths(lake, repo, commit, target)
    if conflicts:
        raise _conflict(repo, branch, target, conflicts)
    source = lake.repository(repo).branch(branch)
    message = f"Publish {build.dataset} ({build.branch})"
    try:
        merged = lake.call(
            f"merging {branch} into {target} in {repo}",
            lambda: source.merge_into(
                target, message=message, metadata=build.metadata()
            ),
            passthrough=(ConflictException,),
        )
    except ConflictException:
        # The target moved between the check and the merge; the merge is
        # atomic, so nothing of it landed.
        raise _conflict(
            repo, branch, target, conflicting_paths(lake, repo, commit, target)
        ) from None
    logger.info("merged %s into %s of %s: %s", branch, target, repo, merged)
    return str(merged)


def conflicting_paths(lake: LakeFS, repo: str, commit: str, target: str) -> list[str]:
    """Paths both the build and the target changed since they parted, differently."""
    base = lake.merge_base(repo, commit, target)
    ours = lake.changed_paths(repo, base, commit)
    theirs = lake.changed_paths(repo, base, target)
    both = sorted(set(ours) & set(theirs))
    if not both:
        return []
    prefixes = {path.rsplit("/", 1)[0] + "/" if "/" in path else "" for path in both}
    ours_now = {}
    theirs_now = {}
    for prefix in prefixes:
        ours_now.update(lake.list_objects(repo, commit, prefix))
        theirs_now.update(lake.list_objects(repo, target, prefix))
    return [
        path
        for path in both
        if getattr(ours_now.get(path), "checksum", None)
        != getattr(theirs_now.get(path), "checksum", None)
    ]


def _conflict(repo: str, branch: str, target: str, paths: list[str]) -> PublishRefused:
    return PublishRefused(
        f"merging lakefs://{repo}/{branch} into {target} was refused: both changed "
        f"the same objects since the build branch was made, and nothing was "
        f"merged:{_listing(paths)}\nThe build is committed on {branch}. Resolve the "
        f"conflict (for example revert the change on {target}, or merge by hand with "
        f"lakectl merge and a --strategy), then publish again."
    )


# Files of the published folder that go into a commit made for the data, but
# never decide whether one is made: the audit log grows with every run.
CARRIED = (PUBLISHED_NAME,)


def dataset_files(folder: Path) -> set[str]:
    """What is published: the files the manifest lists, the manifest, the card.

    These decide whether the target already holds the dataset. Anything else
    in the folder stays local, except the files of CARRIED, which a commit
    takes along; so publishing the same data twice changes nothing.
    """
    from datakiln.publish import CARD, MANIFEST

    manifest = json.loads((folder / MANIFEST).read_text())
    card = manifest.get("card", CARD)
    return {*manifest["files"], MANIFEST, *([card] if (folder / card).exists() else [])}


def _holds(
    lake: LakeFS, repo: str, ref: str, prefix: str, folder: Path, files: set[str]
) -> bool:
    """Whether `ref` already holds exactly the dataset's files under `prefix`
    (besides the CARRIED files of an earlier commit)."""
    from datakiln.publish import CARD, MANIFEST, same_card_but_for_git

    local = scan_folder(folder, files)
    remote = remote_state(lake, repo, ref, prefix)
    for name in CARRIED:
        remote.pop(prefix + name, None)
    if set(remote) != {prefix + relpath for relpath in local}:
        return False
    card = json.loads((folder / MANIFEST).read_text()).get("card", CARD)
    for relpath, file in local.items():
        if remote[prefix + relpath] in (file.sha256, file.md5):
            continue
        # A card that differs only in its git commit line: the same data,
        # rebuilt at a later commit (the one that committed the ref file, say).
        if relpath == card and same_card_but_for_git(
            file.path.read_text(encoding="utf-8"),
            lake.read_bytes(repo, ref, prefix + relpath).decode("utf-8"),
        ):
            continue
        return False
    return True


def _unchanged(
    lake: LakeFS,
    build: Build,
    repo: str,
    target: str,
    prefix: str,
    previous: PublishRef | None,
) -> PublishRef:
    logger.info("lakefs://%s/%s/%s already holds this build", repo, target, prefix)
    if (
        previous is not None
        and (previous.repository, previous.target_branch, previous.path)
        == (repo, target, prefix)
        and previous.status == MERGED
        and previous.merge_commit is not None
        and not lake.changed_paths(repo, previous.merge_commit, target, prefix)
    ):
        return previous
    head = lake.resolve(repo, target)
    return PublishRef(
        build.dataset, repo, target, prefix, build.branch, head, head, MERGED
    )


def _commit(lake: LakeFS, repo: str, branch: str, build: Build) -> str:
    if not lake.uncommitted(repo, branch):
        return lake.resolve(repo, branch)
    handle = lake.repository(repo).branch(branch)
    message = f"Build of {build.dataset} at git {(build.git_commit or 'unknown')[:10]}"
    commit = lake.call(
        f"committing the build on {repo}/{branch}",
        lambda: handle.commit(message, metadata=build.metadata()),
    )
    logger.info("committed %s on %s: %s", build.dataset, branch, commit.id)
    return str(commit.id)


def _merged_at(
    lake: LakeFS, repo: str, target: str, commit: str, previous: PublishRef | None
) -> str | None:
    if previous is not None and previous.commit == commit and previous.merge_commit:
        return previous.merge_commit
    for entry in lake.repository(repo).branch(target).log(max_amount=200):
        if commit in (entry.parents or []):
            return str(entry.id)
    return None


def _listing(paths: list[str]) -> str:
    shown = "".join(f"\n  {path}" for path in paths[:_SHOWN_PATHS])
    if len(paths) > _SHOWN_PATHS:
        shown += f"\n  ... and {len(paths) - _SHOWN_PATHS} more"
    return shown


def _branch_name(text: str) -> str:
    # lakeFS branch names: word characters and dashes, starting with a word one.
    return re.sub(r"[^\w-]", "-", text)
