"""The round trip under real `dvc` in a real git repo, against a real lakeFS:
import raw data, pin it, build, publish to a branch, merge into main.

One small project (a CSV of reviews) reads its source from lakeFS and publishes
there; the tests then move the raw branch, or not, and check what reruns.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from lakefs_fixtures import FAST_RETRY

from datakiln.lakefs import server
from datakiln.lakefs.client import LakeFS
from datakiln.lakefs.publish import dataset_files
from datakiln.lakefs.sync import scan_folder
from datakiln.lakefs.versions import MERGED, read_ref

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "project" / "tiny.yaml"
LAKE_REPO = "roundtrip"
RAW = f"lakefs://{LAKE_REPO}/raw/tiny/"
RUNNING = re.compile(r"Running stage '([^']+)'")


@pytest.fixture(scope="module")
def env(
    lakefs_server: server.LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    creds = lakefs_server.credentials
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        DVC_NO_ANALYTICS="1",
        LAKECTL_CONFIG_FILE=str(tmp_path_factory.mktemp("nolakectl") / "none.yaml"),
        LAKECTL_SERVER_ENDPOINT_URL=creds.endpoint,
        LAKECTL_CREDENTIALS_ACCESS_KEY_ID=creds.access_key_id,
        LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY=creds.secret_access_key,
    )
    env.pop("DVC_EXP_BASELINE_REV", None)
    return env


def run(root: Path, env: dict[str, str], *cmd: str) -> str:
    proc = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout + proc.stderr


def repro(root: Path, env: dict[str, str]) -> set[str]:
    return set(RUNNING.findall(run(root, env, "dvc", "repro")))


def write_reviews(folder: Path, rows: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    lines = ["id,text,score"]
    for i in range(rows):
        words = ["great", "excellent", "love it"] if i % 2 else ["broken", "awful"]
        text = f"The lamp number {i} is {rng.choice(words)} and {rng.random():.6f}"
        lines.append(f'{1000 + i},"{text}",{rng.randint(1, 5)}.0')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def lake(lakefs_server: server.LocalServer) -> LakeFS:
    lake = LakeFS(lakefs_server.credentials, FAST_RETRY)
    lake.ensure_repository(LAKE_REPO, f"local://{LAKE_REPO}")
    lake.protect_branch(LAKE_REPO, "main")
    return lake


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], lake: LakeFS
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("lakefs-project")
    raw = tmp_path_factory.mktemp("raw-drop")
    write_reviews(raw, rows=40)
    run(root, env, "datakiln", "lakefs", "import", str(raw), RAW, "-m", "reviews")

    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "datakiln"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    declaration = yaml.safe_load(FIXTURE.read_text())
    declaration["sources"][0]["path"] = f"{RAW}reviews.csv"
    declaration["publish"] = {"target": "lakefs", "lakefs_repo": LAKE_REPO}
    # dvc.yaml tracks every section as params, so each must be declared.
    declaration.setdefault("ingest", {"batch_rows": 1000})
    (root / "conf" / "dataset").mkdir(parents=True)
    (root / "conf" / "dataset" / "tiny.yaml").write_text(yaml.safe_dump(declaration))
    (root / "conf" / "config.yaml").write_text(
        "defaults:\n  - dataset@dataset.tiny: tiny\n  - _self_\n"
    )
    # dvc.yaml lists data/raw/<dataset> for local sources; here it stays empty.
    (root / "data" / "raw" / "tiny").mkdir(parents=True)
    (root / "data" / "raw" / "tiny" / ".keep").touch()

    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.invalid"],
        ["git", "config", "user.name", "datakiln tests"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "hydra.enabled", "true"],
        ["dvc", "config", "core.autostage", "true"],
        ["datakiln", "compose"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny project reading lakeFS"],
    ):
        run(root, env, *cmd)
    ran = repro(root, env)
    assert {"pin@tiny", "ingest@tiny", "publish@tiny"} <= ran
    run(root, env, "git", "add", "-A")
    run(root, env, "git", "commit", "-qm", "first build")
    yield root


def test_round_trip_reads_the_pinned_commit_and_merges_the_build(
    project: Path, lake: LakeFS
) -> None:
    lock = yaml.safe_load((project / "versions" / "tiny.lock.yaml").read_text())
    raw_commit = lock["sources"]["reviews"]["commit"]
    assert raw_commit == lake.resolve(LAKE_REPO, "raw")

    records = pq.read_table(project / "data/interim/tiny/ingest.parquet")
    assert set(records.column("source_file").to_pylist()) == {
        f"lakefs://{LAKE_REPO}/{raw_commit}/tiny/reviews.csv"
    }
    metrics = json.loads((project / "metrics/tiny/ingest.json").read_text())
    assert metrics["rows_in"] == 40

    ref = read_ref(project, "tiny")
    assert ref is not None and ref.status == MERGED
    assert ref.merge_commit == lake.resolve(LAKE_REPO, "main")
    assert (
        lake.commit_metadata(LAKE_REPO, ref.commit)["git_commit"]
        == run(project, {**os.environ}, "git", "rev-parse", "HEAD~1").strip()
    )
    folder = project / "data" / "published" / "tiny"
    published = scan_folder(folder, dataset_files(folder) | {"audit.jsonl"})
    in_lake = lake.list_objects(LAKE_REPO, "main", "datasets/tiny/")
    local_log = published.pop("audit.jsonl").path.read_bytes()
    lake_log = lake.read_bytes(LAKE_REPO, "main", "datasets/tiny/audit.jsonl")
    del in_lake["datasets/tiny/audit.jsonl"]
    assert {f"datasets/tiny/{p}": f.md5 for p, f in published.items()} == {
        path: entry.checksum for path, entry in in_lake.items()
    }
    # The commit holds the audit log up to split; the publish entry, which
    # names that commit and its merge, follows it in the local copy only.
    *before, publish = local_log.decode().splitlines()
    assert lake_log.decode().splitlines() == before
    assert [json.loads(line)["stage"] for line in before][-2:] == ["validate", "split"]
    entry = json.loads(publish)
    assert entry["stage"] == "publish"
    assert entry["lakefs"]["lakefs_commit"] == ref.commit
    assert entry["lakefs"]["lakefs_merge_commit"] == ref.merge_commit
    card = (folder / "README.md").read_text()
    assert f"tiny/reviews.csv`, read at commit `{raw_commit}`" in card
    tracked = run(project, {**os.environ}, "git", "ls-files", "versions")
    assert tracked.split() == ["versions/tiny.lock.yaml", "versions/tiny.ref.yaml"]


def test_an_unmoved_raw_branch_reruns_nothing(
    project: Path, env: dict[str, str], lake: LakeFS
) -> None:
    main_before = lake.resolve(LAKE_REPO, "main")
    out = run(project, env, "datakiln", "lakefs", "pin")
    assert "versions/tiny.lock.yaml unchanged" in out
    assert repro(project, env) == set()
    assert lake.resolve(LAKE_REPO, "main") == main_before


def test_a_new_raw_commit_moves_the_pin_and_reruns_ingest(
    project: Path, env: dict[str, str], lake: LakeFS, tmp_path: Path
) -> None:
    write_reviews(tmp_path / "raw", rows=48, seed=9)
    run(project, env, "datakiln", "lakefs", "import", str(tmp_path / "raw"), RAW)
    new_commit = lake.resolve(LAKE_REPO, "raw")

    # Without a pin the build stays on the old commit: nothing reruns.
    assert repro(project, env) == set()
    out = run(project, env, "datakiln", "lakefs", "pin", "tiny")
    assert "versions/tiny.lock.yaml updated" in out and new_commit in out

    ran = repro(project, env)
    assert {"ingest@tiny", "publish@tiny"} <= ran
    metrics = json.loads((project / "metrics/tiny/ingest.json").read_text())
    assert metrics["rows_in"] == 48
    ref = read_ref(project, "tiny")
    assert ref is not None and ref.merge_commit == lake.resolve(LAKE_REPO, "main")
    # The new commit took the log along, entries of this build included.
    log = (project / "audit" / "tiny.jsonl").read_text().splitlines()
    lake_log = lake.read_bytes(LAKE_REPO, "main", "datasets/tiny/audit.jsonl")
    assert lake_log.decode().splitlines() == log[:-1]
    assert json.loads(log[-1])["lakefs"]["lakefs_commit"] == ref.commit
