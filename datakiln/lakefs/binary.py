"""The lakeFS server binary: found, or built once from its Go module and cached.

The server is pinned at 1.86.0, the newest release under the Apache-2.0
licence (from 1.87.0 on the server is BUSL-1.1). `go install module@version`
refuses this module because its go.mod has a replace directive, so the build
downloads the module with the Go tool and builds `./cmd/lakefs` from a writable
copy of it. The result lives in the user's cache folder, one binary per
version, so only the first build pays.

Where a binary comes from, first match wins:

1. `$DATAKILN_LAKEFS_BIN`, which must report the pinned version;
2. the cache, `$XDG_CACHE_HOME/datakiln/lakefs/<version>/lakefs`;
3. a `lakefs` on PATH that reports the pinned version;
4. a fresh build into the cache.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datakiln.errors import LakeFSError

logger = logging.getLogger(__name__)

LAKEFS_VERSION = "1.86.0"
MODULE = "github.com/treeverse/lakefs"
BIN_ENV = "DATAKILN_LAKEFS_BIN"
# The variable `lakefs --version` reports; without it the binary says "dev".
_VERSION_VAR = f"{MODULE}/pkg/version.Version"
# The web UI is embedded from webui/dist, which the module ships empty.
_UI_PLACEHOLDER = (
    "<!doctype html><title>lakeFS</title><p>This lakeFS server was built by "
    "datakiln without its web UI. Use the API, lakectl or "
    "<code>datakiln lakefs ls</code>.</p>\n"
)


def cache_dir(version: str = LAKEFS_VERSION) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datakiln" / "lakefs" / version


def binary_version(path: Path) -> str | None:
    """What `<path> --version` reports, or None if it does not run."""
    try:
        done = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version\s+(\S+)", done.stdout)
    return match.group(1) if match else None


def find_binary(version: str = LAKEFS_VERSION) -> Path | None:
    """A lakeFS binary of `version` that is already there, without building."""
    named = os.environ.get(BIN_ENV)
    if named:
        found = binary_version(Path(named))
        if found != version:
            raise LakeFSError(
                f"${BIN_ENV} names {named}, which reports lakeFS version {found}; "
                f"datakiln needs {version}. Unset {BIN_ENV} to use a cached or "
                f"freshly built {version}, or point it at a {version} binary."
            )
        return Path(named)

    cached = cache_dir(version) / "lakefs"
    if cached.exists() and binary_version(cached) == version:
        return cached

    on_path = shutil.which("lakefs")
    if on_path and binary_version(Path(on_path)) == version:
        return Path(on_path)
    return None


def ensure_binary(version: str = LAKEFS_VERSION) -> Path:
    """The lakeFS binary of `version`, building it into the cache if needed."""
    found = find_binary(version)
    if found is not None:
        logger.debug("lakeFS %s: using %s", version, found)
        return found
    return build_binary(version)


def build_binary(version: str = LAKEFS_VERSION) -> Path:
    """Build lakeFS `version` from its Go module into the cache folder."""
    target = cache_dir(version) / "lakefs"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target.parent):
        # Another process may have finished the build while we waited.
        if target.exists() and binary_version(target) == version:
            return target
        go = _go_tool()
        started = time.monotonic()
        logger.info("building lakeFS %s from its Go module (minutes, once)", version)
        module_dir = _download_module(go, version)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(module_dir, src, symlinks=True)
            _make_writable(src)
            dist = src / "webui" / "dist"
            dist.mkdir(parents=True, exist_ok=True)
            (dist / "index.html").write_text(_UI_PLACEHOLDER)
            out = Path(tmp) / "lakefs"
            _run_go(
                go,
                [
                    "build",
                    "-trimpath",
                    "-buildvcs=false",
                    "-ldflags",
                    f"-X {_VERSION_VAR}={version}",
                    "-o",
                    str(out),
                    "./cmd/lakefs",
                ],
                cwd=src,
                what=f"building lakeFS {version}",
            )
            found = binary_version(out)
            if found != version:
                raise LakeFSError(
                    f"the lakeFS build in {src} reports version {found}, expected "
                    f"{version}. Check that {_VERSION_VAR} still exists in the module."
                )
            os.replace(out, target)
        logger.info(
            "built lakeFS %s in %.0f s: %s", version, time.monotonic() - started, target
        )
    return target


def _go_tool() -> str:
    # Where the official Go archive unpacks, in case PATH lacks it (as in a
    # service's minimal environment).
    fallbacks = [Path(os.environ.get("GOROOT", "/usr/local/go")) / "bin" / "go"]
    go = shutil.which("go") or next(
        (str(path) for path in fallbacks if os.access(path, os.X_OK)), None
    )
    if go is None:
        raise LakeFSError(
            "the Go tool is not on PATH, and no lakeFS "
            f"{LAKEFS_VERSION} binary was found (${BIN_ENV}, {cache_dir()}, PATH). "
            f"Install Go 1.26 or newer, or set {BIN_ENV} to a lakeFS "
            f"{LAKEFS_VERSION} binary."
        )
    return go


def _download_module(go: str, version: str) -> Path:
    done = _run_go(
        go,
        ["mod", "download", "-json", f"{MODULE}@v{version}"],
        cwd=None,
        what=f"downloading {MODULE}@v{version}",
    )
    info = json.loads(done)
    module_dir = info.get("Dir")
    if not module_dir or not Path(module_dir).is_dir():
        raise LakeFSError(
            f"`go mod download {MODULE}@v{version}` gave no module folder: "
            f"{info.get('Error', 'no error reported')}"
        )
    return Path(module_dir)


def _run_go(go: str, args: list[str], cwd: Path | None, what: str) -> str:
    # The copied module is its own main module, never part of a workspace.
    env = dict(os.environ, GOWORK="off")
    done = subprocess.run(
        [go, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise LakeFSError(
            f"{what} failed (go {' '.join(args[:2])}, exit {done.returncode}):\n{tail}"
        )
    return done.stdout


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    with open(folder / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
