"""A local lakeFS server: started, found again, restarted, stopped."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import yaml
from lakefs_fixtures import FAST_RETRY, StartServer

from datakiln import cli
from datakiln.lakefs import server
from datakiln.lakefs.client import LakeFS


def _healthy(endpoint: str) -> bool:
    with urllib.request.urlopen(f"{endpoint}/api/v1/healthcheck", timeout=5) as r:
        return bool(r.status == 204)


def test_server_listens_on_loopback_and_accepts_its_keys(
    lakefs_server: server.LocalServer,
) -> None:
    assert lakefs_server.endpoint.startswith("http://127.0.0.1:")
    assert _healthy(lakefs_server.endpoint)
    lake = LakeFS(lakefs_server.credentials, FAST_RETRY)
    assert lake.check_access() == server.ADMIN


def test_server_keeps_its_state_in_the_data_folder(
    lakefs_server: server.LocalServer,
) -> None:
    config = yaml.safe_load((lakefs_server.data_dir / server.CONFIG_NAME).read_text())
    assert config["database"]["local"]["path"].startswith(str(lakefs_server.data_dir))
    assert config["blockstore"]["local"]["path"].startswith(str(lakefs_server.data_dir))
    assert config["committed"]["local_cache"]["dir"].startswith(
        str(lakefs_server.data_dir)
    )
    # No usage statistics, audit or version checks leave the machine.
    assert config["stats"]["enabled"] is False
    assert config["security"]["audit_check_url"] == ""


def test_keys_are_private_and_never_logged(lakefs_server: server.LocalServer) -> None:
    secret = lakefs_server.credentials.secret_access_key
    for name in (server.CONFIG_NAME, server.LAKECTL_NAME):
        assert (lakefs_server.data_dir / name).stat().st_mode & 0o077 == 0
    assert secret not in lakefs_server.log_file.read_text()
    assert secret not in repr(lakefs_server)


def test_lakectl_file_points_at_the_server(lakefs_server: server.LocalServer) -> None:
    lakectl = yaml.safe_load(lakefs_server.lakectl_config.read_text())
    assert lakectl["server"]["endpoint_url"] == lakefs_server.endpoint
    assert (
        lakectl["credentials"]["access_key_id"]
        == lakefs_server.credentials.access_key_id
    )


def test_running_server_is_found_from_its_data_folder(
    lakefs_server: server.LocalServer,
) -> None:
    found = server.running(lakefs_server.data_dir)
    assert found is not None
    assert (found.pid, found.endpoint) == (lakefs_server.pid, lakefs_server.endpoint)


def test_stopped_server_is_gone_and_forgotten(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = start_server(tmp_path / "data")
    running.stop()
    assert not running.alive()
    assert server.running(tmp_path / "data") is None


def test_restart_after_a_kill_keeps_keys_and_repositories(
    start_server: StartServer, tmp_path: Path
) -> None:
    first = start_server(tmp_path / "data")
    LakeFS(first.credentials, FAST_RETRY).ensure_repository("kept", "local://kept")
    first.kill()
    assert not first.alive()

    second = start_server(tmp_path / "data", port=first.port)
    assert second.credentials.secret_access_key == first.credentials.secret_access_key
    lake = LakeFS(second.credentials, FAST_RETRY)
    assert lake.ensure_repository("kept", "local://kept") is False


def test_a_restart_after_a_stop_keeps_the_endpoint(
    start_server: StartServer, tmp_path: Path
) -> None:
    first = start_server(tmp_path / "data")
    # a request leaves a connection behind in TIME_WAIT once the server is gone
    LakeFS(first.credentials, FAST_RETRY).ensure_repository("kept", "local://kept")
    first.stop()

    second = start_server(tmp_path / "data")

    assert second.endpoint == first.endpoint


def test_up_with_a_data_dir_says_how_to_stop_that_server(
    lakefs_binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    data = str(tmp_path / "lake")
    try:
        assert cli.main(["lakefs", "up", "--data-dir", data, "--repo", "stops"]) == 0
        said = capsys.readouterr().out
        assert f"stop it with: datakiln lakefs down --data-dir {data}" in said
    finally:
        assert cli.main(["lakefs", "down", "--data-dir", data]) == 0
    assert server.running(Path(data)) is None
