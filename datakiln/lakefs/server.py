"""A lakeFS server in local mode: one data folder, one loopback port.

The data folder holds everything: the generated server config (with keys made
on first start, readable by its owner only), the local metadata store, the
block store, the server log, a lakectl config file for clients, and a state
file naming the running process. Starting again from the same folder reuses
its keys and data, so a killed server can be restarted where it stopped.

The server never phones home: usage statistics, the audit check and the
latest-version check are switched off in the config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datakiln.errors import LakeFSError
from datakiln.lakefs.binary import ensure_binary
from datakiln.lakefs.credentials import Credentials, write_lakectl_file

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CONFIG_NAME = "server.yaml"
LAKECTL_NAME = "lakectl.yaml"
STATE_NAME = "server.json"
LOG_NAME = "lakefs.log"
ADMIN = "datakiln-admin"


@dataclass
class LocalServer:
    """A lakeFS process serving one data folder."""

    data_dir: Path
    port: int
    pid: int
    credentials: Credentials
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def lakectl_config(self) -> Path:
        return self.data_dir / LAKECTL_NAME

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_NAME

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server gently, then firmly; forget its state file."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            self._signal(signal.SIGKILL)
        self._reap()
        (self.data_dir / STATE_NAME).unlink(missing_ok=True)

    def kill(self) -> None:
        """End the server at once, as a crash would (for failure tests)."""
        self._signal(signal.SIGKILL)
        self._reap()

    def _signal(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start(
    data_dir: Path,
    port: int | None = None,
    binary: Path | None = None,
    timeout: float = 60.0,
) -> LocalServer:
    """Start lakeFS on a loopback port, serving `data_dir`, and wait until ready.

    The process runs in its own session, so it outlives the command that
    started it (`make lakefs`); `LocalServer.stop` or `running(...).stop()`
    ends it.
    """
    binary = binary or ensure_binary()
    data_dir = data_dir.resolve()
    port = port or _previous_port(data_dir) or free_port()
    credentials = _write_config(data_dir, port)
    started = time.monotonic()
    with open(data_dir / LOG_NAME, "ab") as log:
        process = subprocess.Popen(
            [str(binary), "run", "--config", str(data_dir / CONFIG_NAME)],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LocalServer(data_dir, port, process.pid, credentials, process)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.kill()
        raise
    write_lakectl_file(server.lakectl_config, credentials)
    _write_state(server)
    logger.info(
        "lakeFS ready at %s in %.1f s (data in %s)",
        server.endpoint,
        time.monotonic() - started,
        data_dir,
    )
    return server


def running(data_dir: Path) -> LocalServer | None:
    """The server a previous `start` left running on `data_dir`, if it still is."""
    state_file = data_dir.resolve() / STATE_NAME
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    credentials = _credentials_from_config(data_dir.resolve(), int(state["port"]))
    server = LocalServer(
        data_dir.resolve(), int(state["port"]), int(state["pid"]), credentials
    )
    if server.alive() and _healthy(server.endpoint):
        return server
    state_file.unlink(missing_ok=True)
    return None


def _write_config(data_dir: Path, port: int) -> Credentials:
    """Write the server config for `port`, keeping keys made on an earlier start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    path = data_dir / CONFIG_NAME
    previous: dict[str, Any] = yaml.safe_load(path.read_text()) if path.exists() else {}
    installation = previous.get("installation") or {
        "user_name": ADMIN,
        "access_key_id": "AKIAJ" + _random(15, string.ascii_uppercase + string.digits),
        "secret_access_key": _random(40, string.ascii_letters + string.digits),
    }
    encrypt_key = (previous.get("auth") or {}).get("encrypt", {}).get(
        "secret_key"
    ) or _random(48, string.ascii_letters + string.digits)
    config = {
        "listen_address": f"{HOST}:{port}",
        "logging": {"format": "text", "level": "INFO"},
        "database": {"type": "local", "local": {"path": str(data_dir / "metadata")}},
        "blockstore": {"type": "local", "local": {"path": str(data_dir / "block")}},
        # Without this the server caches metadata under ~/lakefs.
        "committed": {"local_cache": {"dir": str(data_dir / "cache")}},
        "auth": {"encrypt": {"secret_key": encrypt_key}},
        "installation": installation,
        "stats": {"enabled": False},
        "email_subscription": {"enabled": False},
        # An empty URL switches the audit check off; keep the default interval.
        "security": {"audit_check_url": "", "check_latest_version": False},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return _credentials_from_config(data_dir, port)


def _previous_port(data_dir: Path) -> int | None:
    """The port of an earlier start, if it is free: clients keep their endpoint."""
    path = data_dir / CONFIG_NAME
    if not path.exists():
        return None
    port = int(str(yaml.safe_load(path.read_text())["listen_address"]).rsplit(":")[-1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Go's listener does, so that the port of a server stopped a moment
        # ago (its connections in TIME_WAIT) counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return None
    return port


def _credentials_from_config(data_dir: Path, port: int) -> Credentials:
    config = yaml.safe_load((data_dir / CONFIG_NAME).read_text())
    installation = config["installation"]
    return Credentials(
        endpoint=f"http://{HOST}:{port}",
        access_key_id=installation["access_key_id"],
        secret_access_key=installation["secret_access_key"],
        origin=str(data_dir / LAKECTL_NAME),
    )


def _random(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _wait_ready(server: LocalServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise LakeFSError(
                f"lakeFS exited while starting on {server.endpoint}. The end of "
                f"{server.log_file}:\n{_log_tail(server.log_file)}"
            )
        if _healthy(server.endpoint):
            return
        time.sleep(0.2)
    raise LakeFSError(
        f"lakeFS did not become ready on {server.endpoint} within {timeout:.0f} s. "
        f"The end of {server.log_file}:\n{_log_tail(server.log_file)}"
    )


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/api/v1/healthcheck", timeout=2) as r:
            return bool(r.status == 204)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _write_state(server: LocalServer) -> None:
    state = {"pid": server.pid, "port": server.port, "endpoint": server.endpoint}
    (server.data_dir / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A server that exited but whose parent (the process that started it) has
    # not reaped it yet is a zombie: signals still reach it, but it is gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    return True
