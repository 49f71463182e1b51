"""The thin shell every `stages/<stage>.py` runs in.

It parses `python stages/<stage>.py <dataset> [hydra overrides]`, composes
params.yaml with Hydra, checks that it is fresh against conf/, validates the
dataset's declaration, configures logging once, runs the stage body and turns a
DatakilnError into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from datakiln.audit import audited, secret_names
from datakiln.config import DatasetConf, check_fresh, dataset_conf, load_params
from datakiln.errors import DatakilnError
from datakiln.paths import DatasetPaths
from datakiln.secrets.store import preflight as preflight_secrets
from datakiln.tables import write_json

logger = logging.getLogger(__name__)


@dataclass
class StageContext:
    stage: str
    dataset: str
    root: Path
    params: DictConfig
    conf: DatasetConf
    paths: DatasetPaths

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.paths.metrics(self.stage), metrics)


StageBody = Callable[[StageContext], None]


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def context(
    stage: str, dataset: str, root: Path, overrides: list[str] | None = None
) -> StageContext:
    check_fresh(root)
    params = load_params(root, overrides)
    conf = dataset_conf(params, dataset)
    return StageContext(stage, dataset, root, params, conf, DatasetPaths(root, dataset))


def context_from_declaration(
    stage: str, dataset: str, root: Path, declaration: dict[str, Any]
) -> StageContext:
    """A context for one dataset declared inline: for tests and notebooks."""
    from omegaconf import OmegaConf

    params = OmegaConf.create({"dataset": {dataset: declaration}})
    conf = dataset_conf(params, dataset)
    return StageContext(stage, dataset, root, params, conf, DatasetPaths(root, dataset))


def _prepared(ctx: StageContext, body: StageBody) -> None:
    preflight_secrets(ctx.root, secret_names(ctx))
    logger.info("%s@%s: starting", ctx.stage, ctx.dataset)
    body(ctx)


def main(stage: str, body: StageBody, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"stages/{stage}.py",
        description=f"Run the {stage} stage for one dataset.",
    )
    parser.add_argument("dataset", help="name of a dataset declared in conf/dataset/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of params.yaml")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    try:
        ctx = context(stage, args.dataset, Path.cwd(), args.overrides)
        # Each run is audited, one that stops at its secrets too; they decrypt
        # (or fail) before any work.
        audited(ctx, lambda ctx: _prepared(ctx, body))
    except DatakilnError as exc:
        if args.verbose:
            logger.exception("%s@%s failed", stage, args.dataset)
        print(f"datakiln: {stage}@{args.dataset}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"datakiln: {stage}@{args.dataset}: interrupted", file=sys.stderr)
        sys.exit(130)
