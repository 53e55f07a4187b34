"""``carsdepo`` — the command line's parser: each command family registers its own sub-commands;
the work is in Dagster or the domain.

Heavy imports (torch, dagster, mlflow) happen inside the command handlers so that ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from carsdepo_assets.cli import app, check, data, demo, fsck, models, sensors, train_real
from carsdepo_assets.state import StateLayout

# A command's handler: its arguments and the state folder, which is read here once.
Handler = Callable[[argparse.Namespace, StateLayout], int]
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
# In the order `carsdepo --help` lists them.
COMMAND_FAMILIES = (data, models, sensors, check, demo, train_real, fsck, app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carsdepo",
        description="carsdepo: find scratches and dents (or 'None') on used-car photos. "
        "State lives under $CARSDEPO_HOME (default: .carsdepo/ in the checkout).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    for family in COMMAND_FAMILIES:
        family.register(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args, StateLayout.from_env())
