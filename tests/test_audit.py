"""The audit log: entries per stage, chained by hash, tampering caught."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datakiln import stage
from datakiln.audit import (
    GENESIS,
    audited,
    ci_identity,
    log_path,
    params_hash,
    secret_names,
    verify,
)
from datakiln.errors import GateError
from datakiln.stage import StageContext

DVC_YAML = """\
stages:
  clean:
    foreach: ${dataset}
    do:
      cmd: python stages/clean.py ${key}
      deps:
        - data/interim/${key}/ingest.parquet
      outs:
        - data/interim/${key}/clean.parquet
      metrics:
        - metrics/${key}/clean.json:
            cache: false
  publish:
    foreach: ${dataset}
    do:
      cmd: python stages/publish.py ${key}
      deps:
        - data/interim/${key}/clean.parquet
      outs:
        - data/published/${key}:
            cache: false
"""
DECLARATION = {
    "description": "audit test",
    "clean": {
        "pii": {
            "actions": {"email": "pseudonymise"},
            "key": "${secret:pii.pseudonym_key}",
        }
    },
    "publish": {"description": "token ${secret:lakefs.secret_key}"},
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for key, value in (("user.name", "Ada Auditor"), ("user.email", "ada@example.org")):
        subprocess.run(["git", "-C", str(tmp_path), "config", key, value], check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    ingest = tmp_path / "data/interim/sample/ingest.parquet"
    ingest.parent.mkdir(parents=True)
    ingest.write_bytes(b"ingested records")
    return tmp_path


def write_clean(ctx: StageContext) -> None:
    ctx.paths.table("clean").write_bytes(b"clean records")
    ctx.write_metrics({"rows_out": 1, "lakefs_commit": "c0ffee"})


def publish(ctx: StageContext) -> None:
    ctx.paths.published_dir.mkdir(parents=True, exist_ok=True)
    (ctx.paths.published_dir / "train.parquet").write_bytes(b"train")


def build(make_context, times: int = 1) -> Path:
    for _ in range(times):
        audited(make_context("clean", DECLARATION), write_clean)
    audited(make_context("publish", DECLARATION), publish)
    return log_path(make_context("clean", DECLARATION).root, "sample")


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_entry_records_who_what_and_the_hashes(project: Path, make_context) -> None:
    ctx = make_context("clean", DECLARATION)
    audited(ctx, write_clean)

    (entry,) = entries(log_path(project, "sample"))
    assert entry["stage"] == "clean" and entry["dataset"] == "sample"
    assert entry["status"] == "ok" and entry["seq"] == 0 and entry["prev"] == GENESIS
    assert entry["who"]["git_name"] == "Ada Auditor"
    assert entry["who"]["git_email"] == "ada@example.org"
    assert entry["inputs"] == {
        "data/interim/sample/ingest.parquet": sha256(b"ingested records")
    }
    assert entry["outputs"]["data/interim/sample/clean.parquet"] == sha256(
        b"clean records"
    )
    assert entry["outputs"]["metrics/sample/clean.json"] is not None
    assert entry["params_hash"] == params_hash(ctx.params, "sample")
    assert entry["secrets"] == ["lakefs.secret_key", "pii.pseudonym_key"]
    assert entry["lakefs"] == {"lakefs_commit": "c0ffee"}


def test_a_dataset_that_pseudonymises_nothing_needs_no_pseudonym_key(
    make_context,
) -> None:
    masked = {**DECLARATION, "clean": {"pii": {"actions": {"email": "mask"}}}}

    assert secret_names(make_context("clean", masked)) == ["lakefs.secret_key"]
    assert secret_names(make_context("clean", DECLARATION)) == [
        "lakefs.secret_key",
        "pii.pseudonym_key",
    ]


def test_a_stage_stopped_by_its_secrets_is_recorded(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("DATAKILN_NO_FRESH", "1")  # no conf/ to compare with
    (project / "params.yaml").write_text(
        yaml.safe_dump({"dataset": {"sample": DECLARATION}})
    )
    ran: list[str] = []

    with pytest.raises(SystemExit) as stopped:
        stage.main("clean", lambda ctx: ran.append(ctx.stage), ["sample"])

    assert stopped.value.code != 0 and not ran
    (entry,) = entries(log_path(project, "sample"))
    assert (entry["stage"], entry["status"]) == ("clean", "failed")
    assert entry["error"].endswith("Error")


def test_a_failed_stage_is_recorded_and_still_fails(
    project: Path, make_context
) -> None:
    def failing(ctx: StageContext) -> None:
        raise GateError("min_rows: 3 < 10")

    with pytest.raises(GateError, match="min_rows"):
        audited(make_context("clean", DECLARATION), failing)

    (entry,) = entries(log_path(project, "sample"))
    assert (entry["status"], entry["error"], entry["outputs"]) == (
        "failed",
        "GateError",
        {},
    )


def test_publish_puts_the_log_beside_the_dataset(project: Path, make_context) -> None:
    log = build(make_context, times=2)

    published = project / "data/published/sample/audit.jsonl"
    assert published.read_bytes() == log.read_bytes()
    assert [e["stage"] for e in entries(log)] == ["clean", "clean", "publish"]
    verdict = verify(log, published)
    assert verdict.ok and verdict.entries == 3 and verdict.anchored


def test_the_params_hash_follows_the_declaration(make_context) -> None:
    a = make_context("clean", DECLARATION)
    b = make_context("clean", {**DECLARATION, "description": "changed"})
    assert params_hash(a.params, "sample") != params_hash(b.params, "sample")


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (
            lambda lines: [lines[0], lines[1].replace('"ok"', '"failed"'), *lines[2:]],
            r"entry 1 \(line 2\) was edited: its hash does not match its contents",
        ),
        (
            lambda lines: [lines[0], *lines[2:]],
            r"line 2 holds entry 2 where entry 1 belongs: entries were removed",
        ),
        (
            lambda lines: [lines[1], lines[0], *lines[2:]],
            r"line 1 holds entry 1 where entry 0 belongs",
        ),
        (
            lambda lines: [lines[0], "{not json", *lines[2:]],
            r"line 2 is not a JSON entry",
        ),
    ],
)
def test_verify_catches_an_edited_removed_or_reordered_entry(
    project: Path, make_context, tamper, problem: str
) -> None:
    log = build(make_context, times=3)
    published = project / "data/published/sample/audit.jsonl"
    assert verify(log, published).ok

    log.write_text("\n".join(tamper(log.read_text().splitlines())) + "\n")

    verdict = verify(log, published)
    assert not verdict.ok
    assert any(re.search(problem, p) for p in verdict.problems), verdict.problems


def test_a_rewritten_chain_is_caught_by_the_published_copy(
    project: Path, make_context
) -> None:
    log = build(make_context, times=2)
    published = project / "data/published/sample/audit.jsonl"
    kept = log.read_text().splitlines()[:-1]  # drop the last entry: chain still valid
    log.write_text("\n".join(kept) + "\n")

    assert verify(log).ok  # alone, a shortened chain looks whole
    verdict = verify(log, published)
    assert verdict.problems == [
        f"{log}: does not begin with the 3 entries published in {published}: "
        f"entries were removed from its end, or it was rewritten. Restore it from "
        f"git (`git log -p -- {log}`)."
    ]


def test_the_command_verifies_every_log_and_fails_on_tampering(
    project: Path, make_context
) -> None:
    log = build(make_context)
    datakiln = Path(sys.executable).parent / "datakiln"

    ok = subprocess.run(
        [str(datakiln), "audit", "verify"], cwd=project, capture_output=True, text=True
    )
    head = entries(log)[-1]["hash"][:16]
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        f"audit/sample.jsonl: 2 entries, chain intact, head {head}; "
        f"its published copy matches\n"
    )

    text = log.read_text().replace("Ada Auditor", "Mallory")
    log.write_text(text)
    bad = subprocess.run(
        [str(datakiln), "audit", "verify", "sample"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert bad.stdout.startswith(
        "audit/sample.jsonl: entry 0 (line 1) was edited: its hash does not match"
    )


def test_ci_identity_comes_from_the_ci_variables() -> None:
    assert ci_identity({}) is None
    assert ci_identity(
        {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "ada", "GITHUB_RUN_ID": "7"}
    ) == {"system": "github-actions", "actor": "ada", "run": "7", "repository": None}
    assert ci_identity({"CI": "true"})["system"] == "ci"
