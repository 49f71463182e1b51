"""`datakiln secrets init|set|check`: the command-line side of secrets."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from datakiln.errors import SecretError

STDIN_HINT = "printf '%s' \"$VALUE\" | datakiln secrets set <file> <key>"


def cmd_init(args: argparse.Namespace) -> int:
    from datakiln.secrets.manage import init
    from datakiln.secrets.store import SecretStore

    for line in init(SecretStore(Path.cwd()), args.generate):
        print(line)
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    import secrets as random_source

    from datakiln.secrets.manage import set_secret
    from datakiln.secrets.store import SecretStore

    value = random_source.token_urlsafe(32) if args.generate else _read_value(args.key)
    store = SecretStore(Path.cwd())
    print(set_secret(store, args.file, args.key, value, replace=args.replace))
    return 0


def _read_value(key: str) -> str:
    """The value from standard input, byte for byte (a prompt on a terminal)."""
    if sys.stdin.isatty():
        return getpass.getpass(f"value for {key} (not echoed): ")
    raw = sys.stdin.buffer.read()
    if not raw:
        raise SecretError(
            f"no value on standard input for '{key}'. Pipe it in, e.g. "
            f"{STDIN_HINT}, or run the command in a terminal to be prompted."
        )
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(
            f"the value for '{key}' on standard input is not UTF-8 text; "
            f"encode binary values (base64) before storing them."
        ) from None
    if value.endswith("\n"):
        print(
            f"note: the value ends with a newline, stored as given; to leave it "
            f"out use {STDIN_HINT}",
            file=sys.stderr,
        )
    return value


def cmd_check(args: argparse.Namespace) -> int:
    from datakiln.secrets.manage import check
    from datakiln.secrets.store import SecretStore

    reports = check(SecretStore(Path.cwd()))
    if not reports:
        print("no secret files under conf/secrets/")
        return 0
    for report in reports:
        for line in report.problems or [report.summary]:
            print(line)
    failed = sum(not report.ok for report in reports)
    print(f"{len(reports) - failed} of {len(reports)} secret file(s) ok")
    return 1 if failed else 0


def add_parser(sub: Any) -> None:
    """Register `datakiln secrets ...` on the main parser's subcommands."""
    parser = sub.add_parser("secrets", help="sops-encrypted secrets in conf/secrets/")
    commands = parser.add_subparsers(dest="secrets_command", required=True)

    p = commands.add_parser(
        "init",
        help="make (or find) your age key and add its recipient to .sops.yaml",
    )
    p.add_argument(
        "--generate",
        nargs="*",
        default=[],
        metavar="FILE.KEY",
        help="also give these secrets a random value where they do not exist yet",
    )
    p.set_defaults(func=cmd_init)

    p = commands.add_parser(
        "set", help="encrypt a value read from standard input into a secrets file"
    )
    p.add_argument("file", help="conf/secrets/<file>.yaml, or just <file>")
    p.add_argument("key", help="dotted key inside the file, e.g. secret_key")
    p.add_argument(
        "--generate", action="store_true", help="store a new random value instead"
    )
    p.add_argument(
        "--replace", action="store_true", help="replace a value the key already has"
    )
    p.set_defaults(func=cmd_set)

    p = commands.add_parser(
        "check",
        help="verify every secrets file is encrypted, decryptable and intact",
    )
    p.set_defaults(func=cmd_check)
