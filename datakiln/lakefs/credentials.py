"""Where the lakeFS endpoint and keys come from, as lakeFS users expect.

The lookup follows lakectl: each of the three values is taken from its
`LAKECTL_*` environment variable when set, otherwise from the lakectl config
file (`$LAKECTL_CONFIG_FILE`, default `~/.lakectl.yaml`).

A team can instead keep the keys of its server in the checkout, encrypted with
sops: `conf/secrets/lakefs.yaml` with `endpoint`, `access_key_id` and
`secret_access_key`. `default_provider` uses that file unless the environment
names keys or a lakectl file explicitly, which always wins. Any other source
plugs in as a `CredentialsProvider`.

Keys never come from params.yaml and never reach a log line, an exception
message or a repr: `Credentials` shows only the key id's first characters and
where the values came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datakiln.errors import LakeFSError

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "LAKECTL_SERVER_ENDPOINT_URL"
KEY_ID_ENV = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
SECRET_ENV = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"
CONFIG_FILE_ENV = "LAKECTL_CONFIG_FILE"
SOPS_FILE = "conf/secrets/lakefs.yaml"


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    # Where the values came from, for error messages: never the values.
    origin: str = ""

    @property
    def shown_key_id(self) -> str:
        """The access key id as messages show it: enough to tell two keys apart
        (AKIA is every key's prefix), not the whole id."""
        key = self.access_key_id
        return f"{key[:4]}...{key[-4:]}" if len(key) >= 12 else f"{key[:2]}..."

    def __repr__(self) -> str:
        return (
            f"Credentials(endpoint={self.endpoint!r}, "
            f"access_key_id={self.shown_key_id!r}, origin={self.origin!r})"
        )


CredentialsProvider = Callable[[], Credentials]


def default_provider(root: Path | None = None) -> CredentialsProvider:
    """Where keys come from in checkout `root` (default: the working folder)."""
    root = root or Path.cwd()
    explicit = any(os.environ.get(n) for n in (KEY_ID_ENV, SECRET_ENV, CONFIG_FILE_ENV))
    if not explicit and (root / SOPS_FILE).exists():
        return lambda: from_sops(root)
    return from_lakectl


def from_sops(root: Path) -> Credentials:
    """Endpoint and keys from the sops-encrypted conf/secrets/lakefs.yaml."""
    from datakiln.secrets import store_for

    store = store_for(root)
    values = {
        key: store.get(f"lakefs.{key}").reveal()
        for key in ("access_key_id", "secret_access_key")
    }
    endpoint = os.environ.get(ENDPOINT_ENV) or store.get("lakefs.endpoint").reveal()
    return Credentials(endpoint, origin=f"{SOPS_FILE} (sops)", **values)


def lakectl_config_path() -> Path:
    named = os.environ.get(CONFIG_FILE_ENV)
    return Path(named) if named else Path.home() / ".lakectl.yaml"


def from_lakectl() -> Credentials:
    """Endpoint and keys from the environment and the lakectl config file."""
    path = lakectl_config_path()
    from_file = _read_lakectl_file(path)
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for key, env_name in _ENV_NAMES.items():
        if os.environ.get(env_name):
            values[key] = os.environ[env_name]
            origins[key] = f"${env_name}"
        elif from_file.get(key):
            values[key] = from_file[key]
            origins[key] = str(path)
    missing = [key for key in _ENV_NAMES if key not in values]
    if missing:
        wanted = "; ".join(
            f"${_ENV_NAMES[key]} or {_FILE_KEYS[key]} in {path}" for key in missing
        )
        raise LakeFSError(
            f"no lakeFS {', '.join(missing)} configured: set {wanted}. For the local "
            f"server of this checkout, run `make lakefs` and follow what it prints."
        )
    # The origin of the keys is what a user needs when the server refuses them.
    key_origins = dict.fromkeys(
        [origins["access_key_id"], origins["secret_access_key"]]
    )
    return Credentials(origin=" and ".join(key_origins), **values)


_ENV_NAMES = {
    "endpoint": ENDPOINT_ENV,
    "access_key_id": KEY_ID_ENV,
    "secret_access_key": SECRET_ENV,
}
_FILE_KEYS = {
    "endpoint": "server.endpoint_url",
    "access_key_id": "credentials.access_key_id",
    "secret_access_key": "credentials.secret_access_key",
}


def _read_lakectl_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LakeFSError(
            f"{path}{where}: not valid YAML. Fix it, or point ${CONFIG_FILE_ENV} "
            f"at another lakectl config file."
        ) from None
    if not isinstance(data, dict):
        return {}
    server = data.get("server") or {}
    creds = data.get("credentials") or {}
    found = {
        "endpoint": server.get("endpoint_url"),
        "access_key_id": creds.get("access_key_id"),
        "secret_access_key": creds.get("secret_access_key"),
    }
    return {key: str(value) for key, value in found.items() if value}


def write_lakectl_file(path: Path, credentials: Credentials) -> None:
    """Write a lakectl config file readable by its owner only."""
    data = {
        "server": {"endpoint_url": credentials.endpoint},
        "credentials": {
            "access_key_id": credentials.access_key_id,
            "secret_access_key": credentials.secret_access_key,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
