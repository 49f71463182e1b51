"""Finding, checking and making the age key that sops decrypts with.

The key is looked up where sops looks: the variable SOPS_AGE_KEY (the key
itself, as CI systems pass it), then the file named by SOPS_AGE_KEY_FILE or,
when that is unset, the user's default key file
(`$XDG_CONFIG_HOME/sops/age/keys.txt`, `~/.config/sops/age/keys.txt`,
`~/Library/Application Support/sops/age/keys.txt` on macOS). Nothing here ever
puts a key into a message or a log: errors describe its shape only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from datakiln.errors import SecretError

KEY_ENV = "SOPS_AGE_KEY"
KEY_FILE_ENV = "SOPS_AGE_KEY_FILE"
# Sources sops also reads, which we pass through without checking them.
OTHER_ENVS = ("SOPS_AGE_KEY_CMD", "SOPS_AGE_SSH_PRIVATE_KEY_FILE")
SECRET_PREFIX = "AGE-SECRET-KEY-1"
# Identities we cannot turn into a recipient here (plugins, post-quantum keys).
OPAQUE_PREFIXES = ("AGE-PLUGIN-", "AGE-SECRET-KEY-PQ-1")


class NoAgeKeyError(SecretError):
    """No age key in any of the places sops looks."""


class MalformedKeyError(SecretError):
    """A place sops reads holds something that is not an age secret key."""


@dataclass
class AgeKeys:
    """The identities found, described without revealing them."""

    # Public keys of the identities, e.g. age1...; what files are encrypted for.
    recipients: list[str] = field(default_factory=list)
    # Where they came from: "$SOPS_AGE_KEY", or a key file's path.
    sources: list[str] = field(default_factory=list)
    # True when some identity's recipient is unknown here (a plugin, or a
    # source such as SOPS_AGE_KEY_CMD that sops reads but we do not).
    opaque: bool = False
    # The key file in use, handed to sops so it reads the same one.
    key_file: Path | None = None

    def __repr__(self) -> str:
        return f"AgeKeys(recipients={self.recipients}, sources={self.sources})"


def default_key_file(env: Mapping[str, str]) -> Path:
    """Where sops looks for keys when SOPS_AGE_KEY_FILE is unset."""
    home = Path(env.get("HOME") or Path.home())
    if env.get("XDG_CONFIG_HOME"):
        config = Path(env["XDG_CONFIG_HOME"])
    elif sys.platform == "darwin":
        config = home / "Library" / "Application Support"
    elif sys.platform == "win32" and env.get("APPDATA"):
        config = Path(env["APPDATA"])
    else:
        config = home / ".config"
    return config / "sops" / "age" / "keys.txt"


def find_keys(env: Mapping[str, str]) -> AgeKeys:
    """Every age identity sops would use, checked; raises if there is none."""
    keys = AgeKeys()
    tried: list[str] = []

    if env.get(KEY_ENV):
        _add(keys, env[KEY_ENV], f"${KEY_ENV}")
    else:
        tried.append(f"{KEY_ENV} is not set")

    if env.get(KEY_FILE_ENV):
        path = Path(env[KEY_FILE_ENV]).expanduser()
        where = f"${KEY_FILE_ENV} ({path})"
        if path.is_file():
            _add(keys, _read_key_file(path, where), str(path))
            keys.key_file = path
        else:
            tried.append(f"{KEY_FILE_ENV} is set to {path}, which does not exist")
    else:
        tried.append(f"{KEY_FILE_ENV} is not set")
        path = default_key_file(env)
        if path.is_file():
            _add(keys, _read_key_file(path, str(path)), str(path))
            keys.key_file = path
        else:
            tried.append(f"the default key file {path} does not exist")

    others = [name for name in OTHER_ENVS if env.get(name)]
    if others:
        keys.opaque = True
        keys.sources.extend(f"${name}" for name in others)
    if not keys.recipients and not keys.opaque:
        raise NoAgeKeyError(
            "no age key found to decrypt secrets: "
            + "; ".join(tried)
            + ". Run `datakiln secrets init` to make a key in the default file, "
            f"or point {KEY_FILE_ENV} at your key file (CI: put the key itself "
            f"in {KEY_ENV})."
        )
    return keys


def _read_key_file(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedKeyError(
            f"{where}: cannot read the age key file ({type(exc).__name__}). "
            f"Check its permissions, or run `datakiln secrets init` for a new one."
        ) from None


def _add(keys: AgeKeys, text: str, where: str) -> None:
    import pyrage

    found = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line or line.startswith("#"):
            continue
        if line.startswith(OPAQUE_PREFIXES):
            keys.opaque = True
            found += 1
            continue
        problem = _shape_problem(line)
        if problem is None:
            try:
                identity = pyrage.x25519.Identity.from_str(line)
            except pyrage.IdentityError:
                problem = "its checksum does not match (a character is wrong or lost)"
            else:
                keys.recipients.append(str(identity.to_public()))
                found += 1
                continue
        raise MalformedKeyError(
            f"{where}: line {number} is not an age secret key: {problem}. "
            f"A key is one line of 74 characters starting {SECRET_PREFIX}, with "
            f"nothing around it; `datakiln secrets init` makes one."
        )
    if found:
        keys.sources.append(where)


def _shape_problem(line: str) -> str | None:
    """Why a line cannot be a key, said without showing the line."""
    if line[:1] in "\"'" or line[-1:] in "\"'":
        return "it is wrapped in quotes; remove them"
    if line != line.strip():
        return "it has spaces or tabs around it; remove them"
    if line.startswith("age1"):
        return (
            "it is a public key (a recipient, age1...), not the secret key; "
            "use the AGE-SECRET-KEY-1... line of the key file"
        )
    if line.startswith("export ") or "=" in line:
        return "it looks like a shell assignment; give the key alone"
    if line.upper().startswith(SECRET_PREFIX) and not line.startswith(SECRET_PREFIX):
        return "it is not in upper case, which sops requires"
    if not line.startswith(SECRET_PREFIX):
        return f"it does not start with {SECRET_PREFIX}"
    return None


def generate_key_file(path: Path) -> str:
    """Write a new age identity to `path` (mode 0600); return its recipient."""
    import pyrage

    if path.exists():
        raise SecretError(
            f"{path} exists already; datakiln never overwrites a key file. "
            f"Use it, or move it away first."
        )
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"# created: {created}\n# public key: {recipient}\n{identity}\n")
    return recipient
