"""Where lakeFS keys come from: the environment, then the lakectl file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from datakiln.errors import LakeFSError
from datakiln.lakefs import credentials
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
