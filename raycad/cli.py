"""The ``raycad`` command line.

Each concern contributes its sub-commands through an ``add_commands(subparsers)`` function in its own
``cli`` module (listed in `COMMAND_MODULES`); heavy imports (Ray, torch) happen inside the command
functions so that ``raycad --help`` stays fast. Commands that run something build the typed config once
with `config_from_args` and pass that object on.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from raycad.config import Config, ConfigError

COMMAND_MODULES = (
    "raycad.data.cli",
    "raycad.train.cli",
    "raycad.tune.cli",
    "raycad.data.healthomics.cli",
    "raycad.launch.cli",
)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` (dotted keys, YAML values)."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override a config field, e.g. --set optim.lr=1e-3 (repeatable)")


def config_from_args(cls: type[Config], args: argparse.Namespace, **fields: Any) -> Config:
    """Config file, then the named flag values (dotted keys as ``a__b``; None = not given), then --set."""
    return cls.load(args.config, overrides=args.overrides, **fields)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raycad",
        description="Fine-tune and tune the Caduceus DNA model on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except ConfigError as err:
        print(f"raycad: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raycad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
