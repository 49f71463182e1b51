"""Secrets through sops: references in config, values decrypted in memory.

Config names a secret as `${secret:<file>.<key>}`; the value lives in the
sops-encrypted `conf/secrets/<file>.yaml`, encrypted for the age recipients in
`.sops.yaml`. Use `reveal(root, text)` where a stage needs a value.
"""

from datakiln.secrets.refs import SecretRef, references, register_resolver
from datakiln.secrets.store import Secret, SecretStore, reveal, store_for

__all__ = [
    "Secret",
    "SecretRef",
    "SecretStore",
    "references",
    "register_resolver",
    "reveal",
    "store_for",
]
