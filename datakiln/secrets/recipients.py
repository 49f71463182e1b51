"""Who secrets are encrypted for: the age recipients in `.sops.yaml`.

sops encrypts a new file for the recipients of the first creation rule whose
`path_regex` matches the file; `sops updatekeys` brings an existing file in
line with that list. This module reads that list and adds to it, keeping the
file's comments and layout (ruamel.yaml round trip).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datakiln.errors import SecretError
from datakiln.secrets.refs import SECRETS_DIR
from datakiln.secrets.sops import CONFIG_FILE

SECRETS_RULE = r"(^|/)conf/secrets/[^/]+\.yaml$"
HEADER = """\
# Who can decrypt conf/secrets/*.yaml: one age recipient (public key) per person
# or CI runner. `datakiln secrets init` adds yours; then someone who can already
# decrypt runs `sops updatekeys conf/secrets/<file>.yaml` for every file and
# commits the result.
"""


def _yaml() -> Any:
    from ruamel.yaml import YAML

    parser = YAML()
    parser.preserve_quotes = True
    parser.indent(mapping=2, sequence=4, offset=2)
    return parser


def _load(root: Path) -> Any:
    path = root / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many unrelated error types
        raise SecretError(
            f"{CONFIG_FILE}: cannot parse it ({type(exc).__name__}: {exc}). Fix the "
            f"YAML; it needs creation_rules with a path_regex and age recipients."
        ) from None


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value]


def _rule_for(doc: Any, relative: str) -> Any:
    rules = doc.get("creation_rules") if doc is not None else None
    for rule in rules or []:
        pattern = rule.get("path_regex")
        if pattern is None or re.search(str(pattern), relative):
            return rule
    return None


def recipients_for(root: Path, relative: str) -> list[str]:
    """The age recipients a new file at `relative` would be encrypted for."""
    rule = _rule_for(_load(root), relative)
    return _split(rule.get("age")) if rule is not None else []


def add_recipient(root: Path, recipient: str) -> bool:
    """Add `recipient` to the rule for conf/secrets/; False if already there."""
    path = root / CONFIG_FILE
    doc = _load(root)
    if doc is None:
        path.write_text(
            f"{HEADER}creation_rules:\n  - path_regex: {SECRETS_RULE}\n"
            f"    age:\n      - {recipient}\n",
            encoding="utf-8",
        )
        return True
    relative = f"{SECRETS_DIR.as_posix()}/example.yaml"
    rule = _rule_for(doc, relative)
    if rule is None:
        from ruamel.yaml.comments import CommentedMap

        rule = CommentedMap(path_regex=SECRETS_RULE, age=[])
        doc.setdefault("creation_rules", []).insert(0, rule)
    current = _split(rule.get("age"))
    if recipient in current:
        return False
    if isinstance(rule.get("age"), str):
        rule["age"] = ",".join([*current, recipient])
    else:
        if rule.get("age") is None:
            rule["age"] = []
        rule["age"].append(recipient)
    with path.open("w", encoding="utf-8") as out:
        _yaml().dump(doc, out)
    return True
