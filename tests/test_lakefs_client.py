"""The client wrapper against a real server: refused keys, downtime, 503s."""

from __future__ import annotations

import http.server
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lakefs_fixtures import FAST_RETRY, StartServer

from datakiln.errors import LakeFSError
from datakiln.lakefs import server
from datakiln.lakefs.client import (
    LakeFS,
    LakeFSAuthError,
    LakeFSUnavailableError,
    RetryPolicy,
    connect,
)
from datakiln.lakefs.credentials import Credentials


@contextmanager
def unavailable_front(upstream: str, failures: int | None) -> Iterator[str]:
    """A loopback proxy that answers 503 to the first `failures` requests (all
    when None), as a load balancer does while lakeFS restarts, then passes
    requests through to the real server."""
    seen = {"requests": 0}

    class Front(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            seen["requests"] += 1
            if failures is None or seen["requests"] <= failures:
                self.send_response(503, "Service Unavailable")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            request = urllib.request.Request(
                upstream + self.path, data=body, method=self.command
            )
            for name, value in self.headers.items():
                if name.lower() not in ("host", "connection"):
                    request.add_header(name, value)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status, headers, data = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as refused:
                status, headers, data = refused.code, refused.headers, refused.read()
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{front.server_address[1]}"
    finally:
        front.shutdown()
        front.server_close()


def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]


def test_wrong_key_fails_at_once_naming_its_origin(
    lakefs_server: server.LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = Credentials(
        lakefs_server.endpoint,
        "AKIAWRONGKEY",
        "not-the-secret",
        "/home/x/.lakectl.yaml",
    )
    caplog.set_level(logging.WARNING)
    with pytest.raises(
        LakeFSAuthError,
        match=r"refused the access key AKIA\.\.\.GKEY from /home/x/\.lakectl\.yaml",
    ):
        LakeFS(wrong, FAST_RETRY).check_access()
    assert _retry_warnings(caplog) == []


def test_wrong_key_message_never_holds_the_secret(
    lakefs_server: server.LocalServer,
) -> None:
    wrong = Credentials(
        lakefs_server.endpoint, "AKIAWRONGKEY", "hush-hush-secret", "env"
    )
    with pytest.raises(LakeFSAuthError) as caught:
        connect(lambda: wrong, FAST_RETRY)
    assert "hush-hush-secret" not in str(caught.value)


def test_server_down_is_retried_then_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://127.0.0.1:{server.free_port()}"
    lake = LakeFS(Credentials(endpoint, "AKIAX", "y", "test"), FAST_RETRY)
    caplog.set_level(logging.WARNING)
    with pytest.raises(
        LakeFSUnavailableError,
        match=rf"lakeFS at {endpoint} is unavailable: .* failed 3 times .*refused",
    ):
        lake.check_access()
    assert len(_retry_warnings(caplog)) == FAST_RETRY.attempts - 1


def test_server_answering_503_is_retried_then_named(
    lakefs_server: server.LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with unavailable_front(lakefs_server.endpoint, failures=None) as front:
        creds = Credentials(
            front,
            lakefs_server.credentials.access_key_id,
            lakefs_server.credentials.secret_access_key,
            "test",
        )
        with pytest.raises(
            LakeFSUnavailableError, match=rf"lakeFS at {front} .*HTTP 503"
        ):
            LakeFS(creds, FAST_RETRY).check_access()
    assert len(_retry_warnings(caplog)) == FAST_RETRY.attempts - 1


def test_brief_503s_are_ridden_out(lakefs_server: server.LocalServer) -> None:
    with unavailable_front(lakefs_server.endpoint, failures=2) as front:
        creds = Credentials(
            front,
            lakefs_server.credentials.access_key_id,
            lakefs_server.credentials.secret_access_key,
            "test",
        )
        assert LakeFS(creds, FAST_RETRY).check_access() == server.ADMIN


def test_missing_repository_names_the_fix(lake: LakeFS) -> None:
    with pytest.raises(LakeFSError, match="no repository 'nowhere-repo'.*make lakefs"):
        lake.require_repository("nowhere-repo")


def test_unknown_ref_names_the_address(lake: LakeFS, lakefs_repo: str) -> None:
    with pytest.raises(
        LakeFSError, match=rf"lakefs://{lakefs_repo}/no-such-branch: no such"
    ):
        lake.resolve(lakefs_repo, "no-such-branch")


def test_a_ref_in_a_missing_repository_names_the_repository(lake: LakeFS) -> None:
    with pytest.raises(LakeFSError, match="has no repository 'nowhere-repo'"):
        lake.resolve("nowhere-repo", "raw")


def test_protected_main_refuses_direct_writes(lake: LakeFS, lakefs_repo: str) -> None:
    assert lake.protected_patterns(lakefs_repo) == ["main"]
    main = lake.repository(lakefs_repo).branch("main")
    with pytest.raises(LakeFSError, match="refused.*protected branch"):
        lake.call(
            "writing to main", lambda: main.object("x").upload(b"x", pre_sign=False)
        )


def test_protecting_twice_keeps_one_rule(lake: LakeFS, lakefs_repo: str) -> None:
    lake.protect_branch(lakefs_repo, "main")
    assert lake.protected_patterns(lakefs_repo) == ["main"]


@pytest.mark.timeout(60)  # without the read timeout the call never returns
def test_a_hung_server_fails_after_one_read_timeout_naming_it(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server(tmp_path / "data")
    caplog.set_level(logging.WARNING)
    patient = RetryPolicy(attempts=3, first_wait=0.05, max_wait=0.2, read_timeout=1)
    os.kill(running.pid, signal.SIGSTOP)  # still accepts connections, never answers
    try:
        with pytest.raises(
            LakeFSUnavailableError,
            match=rf"lakeFS at {running.endpoint} did not answer within 1 s .*hung",
        ):
            LakeFS(running.credentials, patient).check_access()
    finally:
        os.kill(running.pid, signal.SIGCONT)
    assert not _retry_warnings(caplog)
