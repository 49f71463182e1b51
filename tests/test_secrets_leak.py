"""A real build with a known secret, searched for everywhere it must not be.

The pseudonym key is a canary value, set through `datakiln secrets set` into a
sops file encrypted for an age key made here. The project is built with real
`dvc repro` and `dvc exp run -S` (DVC's own Hydra composition), then every
file in the project (Parquet cells, git history, the DVC cache, a private
TMPDIR) and every line any command printed is searched for the value.

The same build checks the personal data the key protects: the tickets hold
e-mail addresses (pseudonymised), phone numbers (masked), a card number (its
record dropped) and an author column (sensitive). None of those values may
reach any output beyond the raw input and ingest's copy of it, while the
pseudonyms, made with the canary key, are in the published data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sops_helpers import AgeKey, clean_env, default_key_file, write_sops_config

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

DECLARATION = """\
description: Support tickets with personal data in them.
sources:
  - name: tickets
    path: data/raw/leaky/tickets.csv
    format: csv
    id_column: id
schema:
  id: {type: int64, nullable: false}
  text: {type: string, nullable: false}
  author: {type: string}
ingest:
  batch_rows: 1000
clean:
  columns: [text]
  min_chars: 5
  pii:
    actions:
      email: pseudonymise
      phone: mask
      mention: pseudonymise
      card: drop
    sensitive_columns: [author]
    key: ${secret:pii.pseudonym_key}
dedup:
  column: text
  threshold: 0.9
  shingle: 2
  max_removed_share: 0.9
label:
  tasks:
    - name: mood
      labels: [good, bad]
      functions:
        - {name: praise, kind: keywords, label: good, keywords: [thanks, great]}
        - {name: moan, kind: keywords, label: bad, keywords: [broken, refund]}
validate:
  gates:
    min_rows: 5
split:
  seed: 3
publish:
  target: local
"""


def tickets(rows: int = 40) -> str:
    lines = ["id,text,author"]
    for i in range(rows):
        mood = "thanks, great service" if i % 2 else "it is broken, I want a refund"
        lines.append(
            f'{i},"Ticket {i}: {mood}. Write to user{i}@example.org or call '
            f'(212) 555-01{i % 100:02d}, cc @agent{i % 3}",user{i}'
        )
    lines.append('99,"pay with 4111 1111 1111 1111 please, thanks",user99')
    return "\n".join(lines) + "\n"


class Build:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.output: list[str] = []

    def run(self, *cmd: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            cmd, cwd=self.root, env=self.env, input=stdin, capture_output=True
        )
        text = proc.stdout.decode(errors="replace") + proc.stderr.decode(
            errors="replace"
        )
        self.output.append(text)
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{text}"
        return text


@pytest.fixture(scope="module")
def canary() -> str:
    return "canary-" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, canary: str) -> Build:
    base = tmp_path_factory.mktemp("leak")
    root, home, tmp = base / "project", base / "home", base / "project" / "tmp"
    root.mkdir()
    key = AgeKey.generate()
    key.write(default_key_file(home))
    env = clean_env(
        home,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        TMPDIR=str(tmp),
        DVC_NO_ANALYTICS="1",
        DATAKILN_NO_FRESH="",
    )
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "datakiln", "hydra_plugins"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "conf" / "dataset").mkdir(parents=True)
    (root / "conf" / "dataset" / "leaky.yaml").write_text(DECLARATION)
    (root / "conf" / "config.yaml").write_text(
        "defaults:\n  - dataset@dataset.leaky: leaky\n  - _self_\n"
    )
    (root / "data" / "raw" / "leaky").mkdir(parents=True)
    (root / "data" / "raw" / "leaky" / "tickets.csv").write_text(tickets())
    (root / ".gitignore").write_text("/data/raw/\n/tmp/\n")
    tmp.mkdir()
    write_sops_config(root, key.recipient)

    b = Build(root, env)
    b.run("git", "init", "-q")
    b.run("git", "config", "user.email", "ci@example.invalid")
    b.run("git", "config", "user.name", "leak test")
    b.run("dvc", "init", "-q")
    b.run("dvc", "config", "hydra.enabled", "true")
    b.run(
        str(BIN / "datakiln"),
        "secrets",
        "set",
        "conf/secrets/pii.yaml",
        "pseudonym_key",
        stdin=canary.encode(),
    )
    b.run(str(BIN / "datakiln"), "secrets", "check")
    b.run(str(BIN / "datakiln"), "compose")
    b.run("git", "add", "-A")
    b.run("git", "commit", "-qm", "leaky project")
    b.run("dvc", "repro", "-v")
    b.run("git", "add", "-A")
    b.run("git", "commit", "-qm", "first build")
    b.run(
        "dvc", "exp", "run", "-v", "-S", "dataset.leaky.clean.pii.actions.mention=mask"
    )
    b.run(str(BIN / "datakiln"), "audit", "verify")
    b.run("dvc", "exp", "show", "--no-pager")
    b.run("git", "log", "--all", "-p", "--no-color")
    return b


def forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode(), value[7:].encode()]


def test_params_and_lock_hold_the_reference_only(build: Build, canary: str) -> None:
    params = (build.root / "params.yaml").read_text()
    lock = (build.root / "dvc.lock").read_text()
    assert "key: ${secret:pii.pseudonym_key}" in params
    assert "${secret:pii.pseudonym_key}" in lock
    assert canary not in params and canary not in lock


def test_no_file_holds_the_value(build: Build, canary: str) -> None:
    hits = []
    for path in build.root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if any(form in data for form in forms(canary)):
            hits.append(path)
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            cells = " ".join(map(str, table.to_pylist()))
            if canary in cells:
                hits.append(path)
    assert hits == []


def test_no_line_of_output_holds_the_value(build: Build, canary: str) -> None:
    lines = [line for text in build.output for line in text.splitlines()]
    assert len(lines) > 50  # the verbose builds really printed their logs
    assert [
        line for line in lines if any(f.decode() in line for f in forms(canary))
    ] == []


def test_the_audit_log_names_the_secret_not_its_value(
    build: Build, canary: str
) -> None:
    log = (build.root / "audit" / "leaky.jsonl").read_text()
    entries = [yaml.safe_load(line) for line in log.splitlines()]
    clean = [e for e in entries if e["stage"] == "clean"]
    assert clean and all(e["secrets"] == ["pii.pseudonym_key"] for e in clean)
    assert canary not in log


# ---------------------------------------------------------------- personal data

# How the raw values of the tickets look; none may pass the clean stage.
RAW_VALUES = [b"@example.org", b"555-01", b"4111 1111", b"4111111111111111"]


def pseudonym(key: str, canonical: str) -> str:
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()[:16]


def published(build: Build) -> list[dict[str, object]]:
    folder = build.root / "data" / "published" / "leaky"
    rows: list[dict[str, object]] = []
    for split in ("train", "validation", "test"):
        rows += pq.read_table(folder / f"{split}.parquet").to_pylist()
    return rows


def raw_inputs(build: Build) -> set[str]:
    """SHA-256 of the files that hold the raw values by design: the source and
    ingest's tables (whose DVC cache copies have the same bytes)."""
    interim = build.root / "data" / "interim" / "leaky"
    inputs = [
        build.root / "data" / "raw" / "leaky" / "tickets.csv",
        interim / "ingest.parquet",
        interim / "ingest_rejects.parquet",
    ]
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs if p.exists()}


def test_no_output_past_ingest_holds_a_personal_value(build: Build) -> None:
    skip = raw_inputs(build)
    hits = []
    for path in build.root.rglob("*"):
        if not path.is_file() or "data/raw" in path.as_posix():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() in skip:
            continue
        if path.suffix == ".parquet":
            data += " ".join(map(str, pq.read_table(path).to_pylist())).encode()
        hits += [(path, raw) for raw in RAW_VALUES if raw in data]
    assert hits == []
    lines = [line for text in build.output for line in text.splitlines()]
    assert [line for line in lines if any(r.decode() in line for r in RAW_VALUES)] == []


def test_published_text_holds_the_pseudonyms_made_with_the_key(
    build: Build, canary: str
) -> None:
    rows = published(build)

    assert len(rows) == 40  # every ticket but the one with a card number
    for row in rows:
        i = int(str(row["text"]).split()[1].rstrip(":"))
        email = pseudonym(canary, f"user{i}@example.org")
        assert f"Write to <email:{email}> or call <phone>, cc <mention>" in str(
            row["text"]
        )
        assert row["author"] == pseudonym(canary, f"user{i}")


def test_the_card_record_is_rejected_masked_and_counted(build: Build) -> None:
    interim = build.root / "data" / "interim" / "leaky"
    rejects = pq.read_table(interim / "clean_rejects.parquet").to_pylist()
    metrics = json.loads((build.root / "metrics/leaky/clean.json").read_text())

    (card,) = [r for r in rejects if r["reject_reason"] == "pii_card"]
    assert card["text"] == "pay with <card> please, thanks"
    assert metrics["pii"]["dropped_records"] == {"card": 1}
    assert metrics["pii"]["kinds"]["email"] == {
        "action": "pseudonymise",
        "matches": 40,
        "records": 40,
    }
    assert metrics["pii"]["pseudonymised_columns"] == {"author": 41}
