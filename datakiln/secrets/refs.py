"""Secret references in config: `${secret:<file>.<key>}`.

A reference names a value in the sops-encrypted file `conf/secrets/<file>.yaml`
(`${secret:lakefs.secret_key}` is the key `secret_key` of
`conf/secrets/lakefs.yaml`; deeper keys are dotted). Composition never
decrypts: the `secret` resolver returns the reference text itself, so
`params.yaml`, `dvc.lock` and the typed config hold only the name, and a stage
turns it into the value in memory when it needs it (see SecretStore.reveal).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESOLVER = "secret"
SECRETS_DIR = Path("conf") / "secrets"

_SEGMENT = r"[A-Za-z0-9_-]+"
_NAME = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})+")
_REFERENCE = re.compile(r"\$\{secret:\s*([^}]*?)\s*\}")


@dataclass(frozen=True)
class SecretRef:
    """A parsed secret name: which file, and which key inside it."""

    name: str
    file: str
    key: tuple[str, ...]

    @classmethod
    def parse(cls, name: str) -> SecretRef:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"'{name}' is not a secret name: write <file>.<key>, for example "
                f"${{secret:lakefs.secret_key}} for the key secret_key of "
                f"{SECRETS_DIR}/lakefs.yaml (letters, digits, '_' and '-')"
            )
        file, *key = name.split(".")
        return cls(name, file, tuple(key))

    def path(self, root: Path) -> Path:
        return root / SECRETS_DIR / f"{self.file}.yaml"

    @property
    def dotted_key(self) -> str:
        return ".".join(self.key)

    @property
    def reference(self) -> str:
        return "${" + RESOLVER + ":" + self.name + "}"


def _keep_reference(name: Any) -> str:
    return SecretRef.parse(str(name)).reference


def register_resolver() -> None:
    """Make OmegaConf keep `${secret:...}` as text instead of failing on it.

    Called before every composition (ours, and DVC's through the plugin in
    hydra_plugins/), so a reference survives `OmegaConf.resolve` unchanged.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _keep_reference)


def names_in(text: str) -> list[str]:
    """The secret names referenced in one string, in order."""
    return [match.group(1) for match in _REFERENCE.finditer(text)]


def substitute(text: str, value_of: Any) -> str:
    """Replace each reference in `text` by `value_of(name)`."""
    return _REFERENCE.sub(lambda match: str(value_of(match.group(1))), text)


def references(tree: Any) -> set[str]:
    """Every secret name referenced anywhere in a nested dict/list of config."""
    return {name for text in _strings(tree) for name in names_in(text)}


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _strings(value)
    elif hasattr(tree, "__dataclass_fields__"):
        for name in tree.__dataclass_fields__:
            yield from _strings(getattr(tree, name))


def declared(params: Any, dataset: str) -> set[str]:
    """Secrets named by one dataset's declaration and by top-level sections."""
    if not isinstance(params, dict):
        return set()
    names = references((params.get("dataset") or {}).get(dataset))
    for key, value in params.items():
        if key != "dataset":
            names |= references(value)
    return names


def as_tree(params: Any) -> dict[str, Any]:
    """params (a DictConfig or a dict) as plain dicts, references unresolved."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=False)
    if not isinstance(params, dict):
        return {}
    return {str(key): value for key, value in params.items()}
