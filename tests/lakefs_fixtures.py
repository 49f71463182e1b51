"""Fixtures that run a real lakeFS server on loopback for the lakeFS tests.

One server serves the whole session from a temporary data folder; each test
that needs a clean slate gets its own repository on it. Tests that stop or
kill a server start their own with `start_server`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datakiln.lakefs import server
from datakiln.lakefs.binary import ensure_binary
from datakiln.lakefs.client import LakeFS, RetryPolicy

# Quick retries keep the failure tests short; the policy itself is the same.
FAST_RETRY = RetryPolicy(attempts=3, first_wait=0.05, max_wait=0.2)

_names = itertools.count(1)

StartServer = Callable[..., server.LocalServer]


@pytest.fixture(scope="session")
def lakefs_binary() -> Path:
    return ensure_binary()


@pytest.fixture(scope="session")
def lakefs_server(
    lakefs_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[server.LocalServer]:
    running = server.start(tmp_path_factory.mktemp("lakefs-data"), binary=lakefs_binary)
    yield running
    running.stop()


@pytest.fixture
def lake(lakefs_server: server.LocalServer) -> LakeFS:
    return LakeFS(lakefs_server.credentials, FAST_RETRY)


@pytest.fixture
def lakefs_repo(lake: LakeFS) -> str:
    """A fresh repository whose main branch is protected, as `make lakefs` makes."""
    name = f"test-{next(_names)}"
    lake.ensure_repository(name, f"local://{name}")
    lake.protect_branch(name, "main")
    return name


@pytest.fixture
def start_server(lakefs_binary: Path, tmp_path: Path) -> Iterator[StartServer]:
    """Start servers this test may stop or kill; all are stopped afterwards."""
    started: list[server.LocalServer] = []

    def start(
        data_dir: Path | None = None, port: int | None = None
    ) -> server.LocalServer:
        running = server.start(
            data_dir or tmp_path / "lakefs-data", port=port, binary=lakefs_binary
        )
        started.append(running)
        return running

    yield start
    for running in started:
        if running.alive():
            running.stop()
