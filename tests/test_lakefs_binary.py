"""Finding, reusing and checking the pinned lakeFS server binary."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from datakiln.errors import LakeFSError
from datakiln.lakefs import binary
from datakiln.lakefs.binary import LAKEFS_VERSION, binary_version, find_binary


def _version_script(folder: Path, version: str) -> Path:
    """A stand-in that answers `--version` like a lakeFS binary of `version`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "lakefs"
    script.write_text(f"#!/bin/sh\necho 'lakefs version {version}'\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No env override, an empty cache folder, and a PATH without lakefs."""
    monkeypatch.delenv(binary.BIN_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return tmp_path


def test_pinned_binary_reports_the_pinned_version(lakefs_binary: Path) -> None:
    assert binary_version(lakefs_binary) == LAKEFS_VERSION == "1.86.0"


def test_cache_folder_follows_xdg_cache_home(clean_env: Path) -> None:
    expected = clean_env / "cache" / "datakiln" / "lakefs" / LAKEFS_VERSION
    assert binary.cache_dir() == expected


def test_cache_folder_defaults_to_home_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert binary.cache_dir() == tmp_path / ".cache/datakiln/lakefs" / LAKEFS_VERSION


def test_cached_binary_is_reused(clean_env: Path, lakefs_binary: Path) -> None:
    cached = binary.cache_dir() / "lakefs"
    cached.parent.mkdir(parents=True)
    os.symlink(lakefs_binary, cached)
    assert find_binary() == cached


def test_nothing_found_without_cache_path_or_env(clean_env: Path) -> None:
    assert find_binary() is None


def test_binary_on_path_is_reused_when_its_version_matches(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _version_script(clean_env / "bin", LAKEFS_VERSION)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert find_binary() == script


def test_binary_on_path_is_ignored_when_its_version_differs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _version_script(clean_env / "bin", "1.87.0")
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert find_binary() is None


def test_env_named_binary_is_used(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, lakefs_binary: Path
) -> None:
    monkeypatch.setenv(binary.BIN_ENV, str(lakefs_binary))
    assert find_binary() == lakefs_binary


def test_env_named_binary_of_another_version_is_refused(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _version_script(clean_env / "other", "1.90.1")
    monkeypatch.setenv(binary.BIN_ENV, str(script))
    with pytest.raises(
        LakeFSError, match=r"reports lakeFS version 1\.90\.1.*needs 1\.86\.0"
    ):
        find_binary()


def test_build_without_go_names_what_to_install(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("GOROOT", str(clean_env / "no-go-here"))
    with pytest.raises(
        LakeFSError, match=r"Go tool is not on PATH.*DATAKILN_LAKEFS_BIN"
    ):
        binary.ensure_binary()
