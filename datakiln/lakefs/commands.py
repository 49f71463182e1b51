"""`datakiln lakefs ...`: the server, imports, pins and lakectl-style views."""

from __future__ import annotations

import argparse
import datetime
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from datakiln.errors import LakeFSError

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = ".lakefs"
DEFAULT_REPO = "datakiln"


def cmd_build(args: argparse.Namespace) -> int:
    from datakiln.lakefs.binary import LAKEFS_VERSION, ensure_binary

    started = time.monotonic()
    path = ensure_binary()
    print(f"lakeFS {LAKEFS_VERSION}: {path} ({time.monotonic() - started:.1f} s)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from datakiln.lakefs import server
    from datakiln.lakefs.client import LakeFS

    data_dir = Path(args.data_dir)
    running = server.running(data_dir)
    if running is None:
        running = server.start(data_dir, port=args.port)
        state = "started"
    else:
        state = "already running"
    lake = LakeFS(running.credentials)
    lake.check_access()
    print(
        f"lakeFS {state} at {running.endpoint} (pid {running.pid}, data in {data_dir}/)"
    )
    for repo in args.repo or repositories_named(Path.cwd()) or [DEFAULT_REPO]:
        created = lake.ensure_repository(repo, f"local://{repo}")
        lake.protect_branch(repo, "main")
        verb = "created" if created else "exists"
        print(f"repository {repo} {verb}; main is protected (changes arrive by merge)")
    print(
        f"credentials: {running.lakectl_config} (readable by you only); use them with"
    )
    print(f"  export LAKECTL_CONFIG_FILE={running.lakectl_config.resolve()}")
    if Path(args.data_dir) == Path(DEFAULT_DATA_DIR):
        print("stop it with: make lakefs-stop  (or: datakiln lakefs down)")
    else:
        print(f"stop it with: datakiln lakefs down --data-dir {args.data_dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from datakiln.lakefs import server

    running = server.running(Path(args.data_dir))
    if running is None:
        print(
            f"no lakeFS server running for {args.data_dir}/ (a server started with "
            f"another --data-dir is stopped with that --data-dir)"
        )
        return 0
    running.stop()
    print(f"stopped lakeFS at {running.endpoint} (pid {running.pid})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from datakiln.lakefs.client import connect
    from datakiln.lakefs.raw import import_folder
    from datakiln.lakefs.uri import LakeFSURI

    target = LakeFSURI.parse(args.target, "target")
    result = import_folder(
        connect(), Path(args.folder), target, message=args.message, mirror=args.delete
    )
    sync = result.sync
    print(
        f"{target}: {len(sync.uploaded)} uploaded, {len(sync.unchanged)} unchanged, "
        f"{len(sync.deleted)} deleted"
    )
    if result.committed:
        print(f"committed {result.commit}")
    else:
        print(f"nothing changed; {target.repo}/{target.ref} stays at {result.commit}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    from datakiln.lakefs.pin import pin_dataset
    from datakiln.lakefs.versions import lock_path
    from datakiln.stage import context

    root = Path.cwd()
    for dataset in args.datasets or declared_datasets(root):
        ctx = context("pin", dataset, root)
        pins, changed = pin_dataset(root, dataset, ctx.conf, keep=args.keep)
        where = lock_path(root, dataset).relative_to(root)
        print(f"{dataset}: {where} {'updated' if changed else 'unchanged'}")
        for name, pin in pins.items():
            print(f"  {name}: {pin.uri} @ {pin.commit}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from datakiln.lakefs.client import connect
    from datakiln.lakefs.uri import LakeFSURI

    uri = LakeFSURI.parse(args.uri, "address")
    lake = connect()
    ref = lake.repository(uri.repo).ref(uri.ref)
    delimiter = None if args.recursive else "/"
    entries = lake.call(
        f"listing {uri}",
        lambda: list(ref.objects(prefix=uri.path, delimiter=delimiter)),
    )
    for entry in entries:
        print(lakectl_line(entry))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from datakiln.lakefs.client import connect
    from datakiln.lakefs.uri import LakeFSURI

    uri = LakeFSURI.parse(args.uri, "address")
    lake = connect()
    ref = lake.repository(uri.repo).ref(uri.ref)
    commits = lake.call(f"reading the log of {uri}", lambda: list(ref.log(args.amount)))
    for commit in commits:
        print(lakectl_commit(commit))
    return 0


def lakectl_line(entry: Any) -> str:
    """One line of `lakectl fs ls`: kind, time, size, path."""
    if not hasattr(entry, "checksum"):
        return f"{'common_prefix':<14}{'':<36}{entry.path}"
    when = _utc(int(entry.mtime))
    size = human_size(int(entry.size_bytes or 0))
    return f"{'object':<14}{when:<30}{size:>10}  {entry.path}"


def lakectl_commit(commit: Any) -> str:
    """One entry of `lakectl log`."""
    lines = [f"ID:            {commit.id}"]
    if commit.committer:
        lines.append(f"Author:        {commit.committer}")
    lines.append(f"Date:          {_utc(int(commit.creation_date))}")
    if len(commit.parents or []) > 1:
        lines.append(f"Merge:         {', '.join(p[:16] for p in commit.parents)}")
    lines += ["", f"    {commit.message}"]
    if commit.metadata:
        lines += ["", "    Metadata:"]
        lines += [
            f"        {key} = {value}" for key, value in sorted(commit.metadata.items())
        ]
    return "\n".join(lines) + "\n"


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _utc(epoch: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def declared_datasets(root: Path) -> list[str]:
    params = _params(root)
    return sorted((params.get("dataset") or {}).keys())


def repositories_named(root: Path) -> list[str]:
    """lakeFS repositories that params.yaml publishes to or reads from."""
    from datakiln.lakefs.uri import LakeFSURI, is_lakefs

    found: set[str] = set()
    for decl in (_params(root).get("dataset") or {}).values():
        repo = (decl.get("publish") or {}).get("lakefs_repo")
        if repo:
            found.add(str(repo))
        for source in decl.get("sources") or []:
            path = str(source.get("path", ""))
            if is_lakefs(path):
                found.add(LakeFSURI.parse(path).repo)
    return sorted(found)


def _params(root: Path) -> dict[str, Any]:
    path = root / "params.yaml"
    if not path.exists():
        return {}
    # Read as plain data: secret references stay unresolved strings here.
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(loaded, dict):
        raise LakeFSError(f"{path}: expected a mapping at the top.")
    return {str(key): value for key, value in loaded.items()}


def add_parser(sub: Any) -> None:
    """Register `datakiln lakefs ...` on the main parser's subcommands."""
    parser = sub.add_parser("lakefs", help="lakeFS: local server, import, pins")
    commands = parser.add_subparsers(dest="lakefs_command", required=True)

    p = commands.add_parser(
        "build", help="find or build the pinned lakeFS server binary (cached)"
    )
    p.set_defaults(func=cmd_build)

    p = commands.add_parser("up", help="start the local lakeFS server and its repos")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="server data folder")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument(
        "--repo",
        action="append",
        help="repository to create (default: those params.yaml names, or datakiln)",
    )
    p.set_defaults(func=cmd_up)

    p = commands.add_parser("down", help="stop the local lakeFS server")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="server data folder")
    p.set_defaults(func=cmd_down)

    p = commands.add_parser(
        "import", help="upload a local folder (changed files only) and commit it"
    )
    p.add_argument("folder", help="local folder of raw files")
    p.add_argument("target", help="lakefs://<repo>/<branch>/<path>")
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument(
        "--delete",
        action="store_true",
        help="also delete objects under the path that the folder no longer has",
    )
    p.set_defaults(func=cmd_import)

    p = commands.add_parser(
        "pin", help="pin lakefs:// sources to the commits their refs stand for now"
    )
    p.add_argument("datasets", nargs="*", help="default: every declared dataset")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep existing pins; pin only new or changed addresses",
    )
    p.set_defaults(func=cmd_pin)

    p = commands.add_parser("ls", help="list objects, as lakectl fs ls does")
    p.add_argument("uri", help="lakefs://<repo>/<ref>/<path>")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = commands.add_parser("log", help="show commits, as lakectl log does")
    p.add_argument("uri", help="lakefs://<repo>/<ref>")
    p.add_argument("-n", "--amount", type=int, default=10)
    p.set_defaults(func=cmd_log)
