"""``carsdepo fsck [--repair]``: check the state folder, in the spirit of ``git fsck``.

It reads, and with ``--repair`` mends, what the platform keeps under ``CARSDEPO_HOME``:

- the image store and the batch manifests (``images.fsck``): every stored image's bytes
  against its sha256 and that it decodes, every manifest row's image present, no stored image
  referenced by no manifest, every manifest parses;
- the annotation snapshots (and ``LATEST``) and the curated datasets (``dataset.json``, its
  splits, ``latest.json``) parse;
- the SQLite databases of the Dagster instance (``dagster/``: runs, event logs, schedules) and
  of MLflow (``mlflow/mlflow.db``) open and pass SQLite's ``quick_check``;
- the models logged to MLflow (``model.pt`` under ``mlflow/artifacts``) are whole: the archive
  ``torch.save`` writes opens and its index is intact (the weights are not loaded).

Each problem is printed with its file and its repair. Exit code 0 when nothing is wrong (or
everything found was repaired), 1 when a problem remains. Nothing here deletes anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from carsdepo_assets.cli.parser import AddCommand


def cmd_fsck(args: argparse.Namespace, layout: StateLayout) -> int:
    if not Path(layout.root).is_dir():
        print(f"carsdepo fsck: no state folder at {layout.root} (nothing to check)")
        return 0
    from carsdepo_assets.cli.state_checks import check_state  # PIL, numpy: not for --help

    findings = check_state(layout, repair=args.repair)
    for finding in findings:
        print("\n".join(finding.lines()))
    remaining = [finding for finding in findings if not finding.repaired]
    repaired = len(findings) - len(remaining)
    print(f"carsdepo fsck: {layout.root}: {len(remaining)} problem(s)"
          + (f", {repaired} repaired" if repaired else ""))
    return 1 if remaining else 0


def register(command: AddCommand) -> None:
    parser = command(
        "fsck", cmd_fsck,
        "Check the state folder: stored images against their sha256, manifests, annotation "
        "snapshots, datasets, the Dagster and MLflow databases and model files; print each "
        "problem with its file and repair; exit 1 when a problem remains.",
    )
    parser.add_argument("--repair", action="store_true",
                        help="store damaged or missing images again from their batch folders "
                             "and list unreferenced images in their batch's manifest")
