"""Where lakeFS keys come from: the environment, the lakectl file, or the
checkout's sops-encrypted conf/secrets/lakefs.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from lakefs_fixtures import FAST_RETRY
from sops_helpers import AgeKey, clean_env, sops_encrypt_plain, write_sops_config

from datakiln.errors import LakeFSError
from datakiln.lakefs import credentials, server
from datakiln.lakefs.client import LakeFS, LakeFSAuthError, connect
from datakiln.lakefs.credentials import Credentials, from_lakectl

ENV = (credentials.ENDPOINT_ENV, credentials.KEY_ID_ENV, credentials.SECRET_ENV)


@pytest.fixture
def lakectl_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "lakectl.yaml"
    monkeypatch.setenv(credentials.CONFIG_FILE_ENV, str(path))
    return path


def _write(path: Path, endpoint: str, key: str, secret: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"endpoint_url": endpoint},
                "credentials": {"access_key_id": key, "secret_access_key": secret},
            }
        )
    )


def test_keys_come_from_the_lakectl_file(lakectl_file: Path) -> None:
    _write(lakectl_file, "http://127.0.0.1:1", "AKIAFILE", "file-secret")
    found = from_lakectl()
    assert (found.endpoint, found.access_key_id) == ("http://127.0.0.1:1", "AKIAFILE")
    assert found.secret_access_key == "file-secret"
    assert found.origin == str(lakectl_file)


def test_environment_wins_over_the_file(
    lakectl_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(lakectl_file, "http://127.0.0.1:1", "AKIAFILE", "file-secret")
    monkeypatch.setenv(credentials.KEY_ID_ENV, "AKIAENV")
    monkeypatch.setenv(credentials.SECRET_ENV, "env-secret")
    found = from_lakectl()
    assert (found.access_key_id, found.secret_access_key) == ("AKIAENV", "env-secret")
    assert found.endpoint == "http://127.0.0.1:1"
    assert found.origin == f"${credentials.KEY_ID_ENV} and ${credentials.SECRET_ENV}"


def test_home_lakectl_yaml_is_the_default_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(credentials.CONFIG_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials.lakectl_config_path() == tmp_path / ".lakectl.yaml"


def test_missing_values_name_the_variables_and_file(lakectl_file: Path) -> None:
    with pytest.raises(
        LakeFSError,
        match=r"SECRET_ACCESS_KEY or credentials\.secret_access_key in",
    ):
        from_lakectl()


def test_broken_lakectl_file_is_named_with_its_line(lakectl_file: Path) -> None:
    lakectl_file.write_text("server:\n  endpoint_url: [unclosed\n")
    with pytest.raises(LakeFSError, match=r"lakectl\.yaml line \d+: not valid YAML"):
        from_lakectl()


def test_secret_never_shows_in_repr_or_str() -> None:
    found = Credentials("http://127.0.0.1:1", "AKIASHOWN", "s3cr3t-value", "here")
    assert "s3cr3t-value" not in repr(found)
    assert "s3cr3t-value" not in str(found)


def test_two_access_keys_show_apart_without_showing_whole() -> None:
    one = Credentials("http://127.0.0.1:1", "AKIAJ2QDEXAMPLE7Q7XA", "s", "here")
    two = Credentials("http://127.0.0.1:1", "AKIAJ2QDEXAMPLE9ZZ3B", "s", "here")

    assert (one.shown_key_id, two.shown_key_id) == ("AKIA...Q7XA", "AKIA...ZZ3B")
    assert "AKIAJ2QDEXAMPLE7Q7XA" not in repr(one)


def test_written_lakectl_file_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "lakectl.yaml"
    written = Credentials("http://127.0.0.1:2", "AKIAWRITE", "w-secret", "x")
    credentials.write_lakectl_file(path, written)
    assert path.stat().st_mode & 0o077 == 0
    assert credentials._read_lakectl_file(path) == {
        "endpoint": "http://127.0.0.1:2",
        "access_key_id": "AKIAWRITE",
        "secret_access_key": "w-secret",
    }


# ------------------------------------------------------------ sops (real binary)


@pytest.fixture
def sops_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lakefs_server: server.LocalServer
) -> Path:
    """A checkout whose conf/secrets/lakefs.yaml holds the server's keys."""
    for name in (*ENV, credentials.CONFIG_FILE_ENV, "SOPS_AGE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    key = AgeKey.generate()
    monkeypatch.setenv("SOPS_AGE_KEY", key.secret)
    root = tmp_path / "checkout"
    root.mkdir()
    write_sops_config(root, key.recipient)
    creds = lakefs_server.credentials
    plain = yaml.safe_dump(
        {
            "endpoint": creds.endpoint,
            "access_key_id": creds.access_key_id,
            "secret_access_key": creds.secret_access_key,
        }
    )
    env = clean_env(tmp_path / "home", SOPS_AGE_KEY=key.secret)
    sops_encrypt_plain(root, credentials.SOPS_FILE, plain, env)
    return root


def test_team_keys_come_from_the_sops_file_of_the_checkout(
    sops_checkout: Path, lakefs_server: server.LocalServer
) -> None:
    found = credentials.default_provider(sops_checkout)()
    assert found.origin == "conf/secrets/lakefs.yaml (sops)"
    assert found.endpoint == lakefs_server.endpoint
    assert LakeFS(found, FAST_RETRY).check_access() == server.ADMIN
    assert lakefs_server.credentials.secret_access_key not in repr(found)


def test_an_explicit_lakectl_file_wins_over_the_sops_file(
    sops_checkout: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lakectl = tmp_path / "mine.yaml"
    _write(lakectl, "http://127.0.0.1:9", "AKIAMINE", "mine")
    monkeypatch.setenv(credentials.CONFIG_FILE_ENV, str(lakectl))
    assert credentials.default_provider(sops_checkout)().access_key_id == "AKIAMINE"


def test_a_wrong_key_in_the_sops_file_is_named_as_its_origin(
    sops_checkout: Path, tmp_path: Path, lakefs_server: server.LocalServer
) -> None:
    plain = yaml.safe_dump(
        {
            "endpoint": lakefs_server.endpoint,
            "access_key_id": "AKIAOUTDATED",
            "secret_access_key": "rotated-long-ago",
        }
    )
    env = clean_env(tmp_path / "home2", SOPS_AGE_KEY=os.environ["SOPS_AGE_KEY"])
    sops_encrypt_plain(sops_checkout, credentials.SOPS_FILE, plain, env)
    with pytest.raises(
        LakeFSAuthError, match=r"from conf/secrets/lakefs\.yaml \(sops\)"
    ):
        connect(credentials.default_provider(sops_checkout), FAST_RETRY)
