"""The pricing team's page (``app``): check photos, watch monitoring, compare models in a
browser, over the same state folder as every other command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


def cmd_app(args: argparse.Namespace, layout: StateLayout) -> int:
    import os

    from carsdepo_assets.app.launch import app_command
    from carsdepo_assets.detection.champion import mlflow_tracking_uri
    from carsdepo_assets.resources.mlflow import DEFAULT_MODEL_NAME

    layout = layout.ensure()
    argv, env = app_command(layout, args.model_name or DEFAULT_MODEL_NAME,
                            mlflow_tracking_uri(layout), Path(sys.executable).parent,
                            host=args.host, port=args.port)
    print(f"carsdepo app on http://{args.host}:{args.port} (state {layout.root}); "
          "Ctrl-C stops it", flush=True)
    os.execve(argv[0], argv, env)  # the web server replaces this process


def register(command: AddCommand) -> None:
    from carsdepo_assets.app.launch import DEFAULT_HOST, DEFAULT_PORT

    app = command(
        "app", cmd_app,
        "Open the page for people who price cars: drop photos and see the damage drawn with "
        "the champion's answer, drift decisions, KPIs and model history.",
    )
    app.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help=f"port (default {DEFAULT_PORT})")
    app.add_argument("--host", default=DEFAULT_HOST,
                     help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    app.add_argument("--model-name", help="registered model (default: carsdepo-damage-detector)")
