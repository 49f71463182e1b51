"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datakiln.stage import StageContext, context_from_declaration

REPO = Path(__file__).resolve().parent.parent

MakeContext = Callable[..., StageContext]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout under test."""
    return REPO


@pytest.fixture
def make_context(tmp_path: Path) -> MakeContext:
    """Build a StageContext for a dataset declared inline, rooted in tmp_path."""

    def make(
        stage: str, declaration: dict[str, Any], dataset: str = "sample"
    ) -> StageContext:
        return context_from_declaration(stage, dataset, tmp_path, declaration)

    return make


# A real lakeFS server on loopback for the lakeFS tests (tests/lakefs_fixtures.py).
from lakefs_fixtures import (  # noqa: E402, F401
    lake,
    lakefs_binary,
    lakefs_repo,
    lakefs_server,
    start_server,
)
