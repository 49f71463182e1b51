"""The `datakiln secrets` commands: init, set and check.

Each returns the lines to show a person; none of them ever holds a value.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as random_source
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datakiln.errors import SecretError
from datakiln.secrets import keys as agekeys
from datakiln.secrets import recipients as rules
from datakiln.secrets import sops
from datakiln.secrets.refs import SECRETS_DIR, SecretRef
from datakiln.secrets.store import SecretStore, type_change_message

logger = logging.getLogger(__name__)

_ENCRYPTED = "ENC[AES256_GCM,"


def secret_file(root: Path, given: str) -> tuple[Path, str]:
    """A file argument (`pii` or `conf/secrets/pii.yaml`) as path and shown name."""
    name = Path(given).name.removesuffix(".yaml") if given.endswith(".yaml") else given
    if "/" in name or not name or given.endswith(".yml"):
        raise SecretError(
            f"'{given}': name a file in {SECRETS_DIR}/ ending .yaml, or just its "
            f"name (e.g. `pii` for {SECRETS_DIR}/pii.yaml)."
        )
    if given.endswith(".yaml"):
        parent = Path(given).parent
        if parent.as_posix() not in (SECRETS_DIR.as_posix(), "."):
            raise SecretError(
                f"'{given}': secrets live in {SECRETS_DIR}/ (that is where "
                f".sops.yaml encrypts them); use {SECRETS_DIR}/{name}.yaml."
            )
    shown = (SECRETS_DIR / f"{name}.yaml").as_posix()
    return root / shown, shown


def set_secret(
    store: SecretStore, given: str, dotted_key: str, value: str, replace: bool = False
) -> str:
    """Encrypt `value` under `dotted_key` of a secrets file, creating it if new.

    A key that already holds a value is replaced only with `replace`: the old
    value is gone once replaced, and a new pseudonym key changes every
    pseudonym.
    """
    path, shown = secret_file(store.root, given)
    ref = SecretRef.parse(f"{path.stem}.{dotted_key}")
    if path.exists():
        current = store.decrypt(path)  # the precise error first: key, recipients, MAC
        if _holds(current, ref.key) and not replace:
            raise SecretError(
                f"{shown} already has a value for '{ref.dotted_key}'; it is left as "
                f"it is. Replacing it loses the old value (and a new pseudonym key "
                f"changes every pseudonym): run the command again with --replace "
                f"if that is what you want."
            )
        proc = sops.run(
            ["set", "--value-stdin", str(path), sops.json_index(ref.key)],
            store.root,
            store.sops_env(),
            stdin=json.dumps(value),
        )
        if proc.returncode != 0:
            raise sops.failure(proc, shown)
        return f"set {ref.dotted_key} in {shown} (encrypted)"

    recipients = rules.recipients_for(store.root, shown)
    if not recipients:
        raise SecretError(
            f"{sops.CONFIG_FILE} names no age recipients for {shown}, so nobody could "
            f"decrypt it. Run `datakiln secrets init` to add your key's recipient."
        )
    tree: dict[str, Any] = {}
    node = tree
    for part in ref.key[:-1]:
        node = node.setdefault(part, {})
    node[ref.key[-1]] = value
    proc = sops.run(
        ["encrypt", "--filename-override", shown, "--input-type", "json"]
        + ["--output-type", "yaml"],
        store.root,
        store.env,
        stdin=json.dumps(tree),
    )
    if proc.returncode != 0:
        raise sops.failure(proc, shown)
    _write_atomic(path, proc.stdout)
    return (
        f"created {shown} with {ref.dotted_key}, encrypted for "
        f"{len(recipients)} recipient(s)"
    )


def _holds(tree: Any, key: tuple[str, ...]) -> bool:
    node = tree
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _write_atomic(path: Path, ciphertext: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(ciphertext)
    os.replace(tmp, path)


def init(store: SecretStore, generate: list[str]) -> list[str]:
    """Make or find the user's age key, list it in .sops.yaml, make secrets."""
    lines: list[str] = []
    try:
        found = store.keys()
    except agekeys.NoAgeKeyError:
        env = store.env
        target = (
            Path(env[agekeys.KEY_FILE_ENV]).expanduser()
            if env.get(agekeys.KEY_FILE_ENV)
            else agekeys.default_key_file(env)
        )
        recipient = agekeys.generate_key_file(target)
        lines.append(
            f"created a new age key in {target} (recipient {recipient}). It never "
            f"leaves your machine: back it up; without it you cannot decrypt."
        )
        store._keys = None
        found = store.keys()
    else:
        lines.append(
            f"using your age key from {', '.join(found.sources)} "
            f"(recipient {', '.join(found.recipients) or 'unknown'})"
        )
    if not found.recipients:
        raise SecretError(
            "your age key comes from a source whose recipient datakiln cannot "
            f"derive ({', '.join(found.sources)}); add its age1... recipient to "
            f"{sops.CONFIG_FILE} by hand."
        )
    recipient = found.recipients[0]
    if rules.add_recipient(store.root, recipient):
        lines.append(
            f"added {recipient} to {sops.CONFIG_FILE}: commit it, and ask someone "
            f"who can decrypt the existing files to run `sops updatekeys "
            f"{SECRETS_DIR.as_posix()}/<file>.yaml` for each, so you can read them"
        )
    for name in generate:
        lines.append(_generate(store, name))
    return lines


def _generate(store: SecretStore, name: str) -> str:
    """Give a secret a new random value, unless it exists already."""
    ref = SecretRef.parse(name)
    path = ref.path(store.root)
    if path.exists():
        tree = store.decrypt(path)
        node: Any = tree
        for part in ref.key:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return f"{name} exists in {store.relative(path)}; kept"
    value = random_source.token_urlsafe(32)
    return set_secret(store, ref.file, ref.dotted_key, value) + " (random value)"


@dataclass
class FileReport:
    shown: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def check(store: SecretStore) -> list[FileReport]:
    """Every file under conf/secrets/: encrypted, decryptable, MAC valid, typed."""
    folder = store.root / SECRETS_DIR
    listed = sorted(folder.iterdir()) if folder.is_dir() else []
    files = [p for p in listed if p.is_file() and _is_secret_file(p)]
    return [_check_file(store, path) for path in files]


def _is_secret_file(path: Path) -> bool:
    """Everything in conf/secrets/ but its README and hidden files."""
    return path.name != "README.md" and not path.name.startswith(".")


def _check_file(store: SecretStore, path: Path) -> FileReport:
    shown = store.relative(path)
    report = FileReport(shown)
    if path.suffix != ".yaml":
        report.problems.append(
            f"{shown}: not a .yaml file; datakiln reads only {SECRETS_DIR}/*.yaml. "
            f"Move its values into a .yaml file with `datakiln secrets set`."
        )
        return report
    try:
        # metadata() reads the YAML first and reports a file it cannot parse
        # without quoting it, so no plain value reaches a message.
        meta = sops.metadata(path, shown)
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except SecretError as exc:
        report.problems.append(str(exc))
        report.problems.extend(_plaintext_types(shown, path))
        return report
    values = 0
    for key, leaf in _leaves({k: v for k, v in doc.items() if k != "sops"}):
        values += 1
        if not isinstance(leaf, str) or not leaf.startswith(_ENCRYPTED):
            report.problems.append(
                f"{shown}: key '{key}' is stored in plain text (an unencrypted "
                f"suffix or a hand edit). Set it again with `datakiln secrets set "
                f"{shown} {key}` and remove the plain entry with `sops edit {shown}`."
            )
            continue
        kind = leaf.rsplit("type:", 1)[-1].rstrip("]")
        if kind != "str":
            report.problems.append(type_change_message(shown, key, kind))
    try:
        store.decrypt(path)
    except SecretError as exc:
        report.problems.append(str(exc))
    wanted = set(rules.recipients_for(store.root, shown))
    have = set(sops.age_recipients(meta))
    if wanted - have:
        report.problems.append(
            f"{shown}: not yet encrypted for {', '.join(sorted(wanted - have))} "
            f"listed in {sops.CONFIG_FILE}; run `sops updatekeys {shown}` and commit."
        )
    report.summary = (
        f"{shown}: ok ({values} value(s), encrypted for {len(have)} recipient(s), "
        f"MAC valid)"
    )
    return report


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, tree


def _plaintext_types(shown: str, path: Path) -> list[str]:
    """In a plain file, values YAML would not keep as strings (before encrypting)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(doc, dict):
        return []
    return [
        f"{shown}: key '{key}' is not quoted and YAML reads it as "
        f"{type(leaf).__name__}; quote it before encrypting, e.g. "
        f'{key.split(".")[-1]}: "..."'
        for key, leaf in _leaves(doc)
        if leaf is not None and not isinstance(leaf, str)
    ]
