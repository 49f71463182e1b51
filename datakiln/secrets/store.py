"""Reading secrets at run time: decrypted in memory, once per file per process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datakiln.errors import SecretError
from datakiln.secrets import keys as agekeys
from datakiln.secrets import sops
from datakiln.secrets.refs import (
    SECRETS_DIR,
    SecretRef,
    names_in,
    substitute,
)

logger = logging.getLogger(__name__)


class MissingSecretError(SecretError):
    """A referenced secret file or key does not exist."""


class SecretTypeError(SecretError):
    """A secret is stored as a number or boolean, so its text may have changed."""


class Secret:
    """A decrypted value that never shows itself in a repr, str or f-string."""

    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable, so it cannot reach a file")


class SecretStore:
    """The secrets of one checkout, as the current age key can read them."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.env = dict(os.environ if env is None else env)
        self._files: dict[str, Any] = {}
        self._keys: agekeys.AgeKeys | None = None

    def __repr__(self) -> str:
        return f"SecretStore({str(self.root)!r}, files={sorted(self._files)})"

    def get(self, name: str) -> Secret:
        ref = _parse(name)
        tree = self._file(ref)
        shown = self._shown(ref)
        node: Any = tree
        for depth, part in enumerate(ref.key):
            if not isinstance(node, dict) or part not in node:
                have = sorted(node) if isinstance(node, dict) else []
                where = ".".join(ref.key[:depth]) or "the top level"
                raise MissingSecretError(
                    f"{shown}: no key '{ref.dotted_key}' for secret '{name}' "
                    f"({where} has: {', '.join(map(str, have)) or 'nothing'}). Add "
                    f"it with `datakiln secrets set {shown} {ref.dotted_key}` "
                    f"(the value is read from standard input)."
                )
            node = node[part]
        if isinstance(node, dict | list):
            raise MissingSecretError(
                f"{shown}: '{ref.dotted_key}' holds a group of keys, not a value; "
                f"name one key inside it, e.g. ${{secret:{name}.<key>}}."
            )
        if not isinstance(node, str):
            kind = "null" if node is None else type(node).__name__
            raise SecretTypeError(type_change_message(shown, ref.dotted_key, kind))
        return Secret(name, node)

    def reveal(self, text: str) -> str:
        """`text` with each `${secret:...}` replaced by its value, in memory."""
        return substitute(text, lambda name: self.get(name).reveal())

    def preflight(self, names: Iterable[str]) -> None:
        """Decrypt and check every named secret now, before any work starts."""
        for name in sorted(set(names)):
            self.get(name)

    def keys(self) -> agekeys.AgeKeys:
        if self._keys is None:
            self._keys = agekeys.find_keys(self.env)
        return self._keys

    def sops_env(self) -> dict[str, str]:
        """The environment sops runs in: ours, pointing at the key we checked."""
        env = dict(self.env)
        found = self.keys()
        if found.key_file is not None:
            env[agekeys.KEY_FILE_ENV] = str(found.key_file)
        return env

    def decrypt(self, path: Path) -> Any:
        """Check the key against the file's recipients, then decrypt it."""
        shown = self.relative(path)
        meta = sops.metadata(path, shown)
        found = self.keys()
        recipients = sops.age_recipients(meta)
        checkable = not found.opaque and not sops.uses_other_keys(meta)
        if checkable and not set(recipients) & set(found.recipients):
            raise sops.WrongRecipientError(
                f"{shown} is encrypted for {', '.join(recipients) or 'nobody'}"
                f"; your key ({', '.join(found.recipients)}, from "
                f"{', '.join(found.sources)}) is not among them. Ask someone "
                f"who can decrypt it to add your recipient to {sops.CONFIG_FILE} "
                f"and run `sops updatekeys {shown}`, then pull."
            )
        return sops.decrypt(path, shown, self.root, self.sops_env())

    def relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def _shown(self, ref: SecretRef) -> str:
        return (SECRETS_DIR / f"{ref.file}.yaml").as_posix()

    def _file(self, ref: SecretRef) -> Any:
        if ref.file in self._files:
            return self._files[ref.file]
        path = ref.path(self.root)
        shown = self._shown(ref)
        if not path.is_file():
            raise MissingSecretError(
                f"{shown} does not exist, so secret '{ref.name}' cannot be read. "
                f"Create it with `datakiln secrets set {shown} {ref.dotted_key}` "
                f"(the value is read from standard input), or `datakiln secrets "
                f"init --generate {ref.name}` for a random key, or pull it from the "
                f"team's repo."
            )
        tree = self.decrypt(path)
        logger.debug("decrypted %s in memory", shown)
        self._files[ref.file] = tree
        return tree


def type_change_message(shown: str, key: str, kind: str) -> str:
    read_as = {"int": "an integer", "float": "a float", "bool": "a boolean"}
    return (
        f"{shown}: key '{key}' is stored as {kind}, not as a string: YAML read the "
        f"unquoted value as {read_as.get(kind, kind)}, which drops leading zeros, "
        f"underscores and "
        f"digits past the 15th, so it may no longer be what was written. Quote "
        f"it: set it again with `datakiln secrets set {shown} {key}` (stdin is "
        f"stored as a string exactly), or `sops edit {shown}` and write "
        f'{key.split(".")[-1]}: "..." in quotes.'
    )


def _parse(name: str) -> SecretRef:
    try:
        return SecretRef.parse(name)
    except ValueError as exc:
        raise SecretError(str(exc)) from None


_STORES: dict[Path, SecretStore] = {}


def store_for(root: Path) -> SecretStore:
    """The process's store for a checkout, made on first use."""
    key = root.resolve()
    if key not in _STORES:
        _STORES[key] = SecretStore(key)
    return _STORES[key]


def reveal(root: Path, text: str) -> str:
    """Resolve the `${secret:...}` references in a config value, in memory."""
    if not names_in(text):
        return text
    return store_for(root).reveal(text)


def preflight(root: Path, names: Iterable[str]) -> None:
    """Decrypt every named secret before work starts.

    So a missing key, a wrong recipient or a broken MAC stops a stage before
    it reads a record, and the values are in memory when the stage needs them.
    """
    names = sorted(set(names))
    if names:
        store_for(root).preflight(names)
