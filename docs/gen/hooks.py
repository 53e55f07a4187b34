"""MkDocs hook (``hooks:`` in mkdocs.yml): the pages generated at build time, so that no
generated file is committed and none can go stale.

- ``reference/cli.md``, ``reference/configuration.md``, ``reference/catalogue.md``: from the
  parser, the detector's config classes and the Dagster Definitions (``reference_pages``);
- ``benchmarks.md``: from ``benchmarks/results/*.jsonl`` (``benchmarks.report.page``);
- ``changelog.md``, ``developing.md`` and ``deployment.md``: ``CHANGELOG.md``,
  ``DEVELOPERS.md`` and ``deploy/README.md`` of the repository, which stay where people look
  for them.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import reference_pages  # docs/gen/, beside this hook (MkDocs puts it on sys.path to load it)
from mkdocs.structure.files import File, Files

REPO_ROOT = Path(__file__).resolve().parents[2]


def generated_pages() -> dict[str, str]:
    """``{page path under docs/: markdown}`` for every generated page."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # the benchmarks package is not installed
    from benchmarks import report
    from carsdepo_assets.cli.parser import build_parser

    with warnings.catch_warnings():  # Dagster's beta/preview notices about its own API
        warnings.simplefilter("ignore")
        from carsdepo_assets.definitions import defs
    return {
        "reference/cli.md": reference_pages.cli_page(build_parser()),
        "reference/configuration.md": reference_pages.config_page(),
        "reference/catalogue.md": reference_pages.catalogue_page(defs),
        "benchmarks.md": report.page(),
        "changelog.md": (REPO_ROOT / "CHANGELOG.md").read_text(),
        "developing.md": (REPO_ROOT / "DEVELOPERS.md").read_text(),
        "deployment.md": (REPO_ROOT / "deploy" / "README.md").read_text(),
    }


def on_files(files: Files, config) -> Files:
    for path, markdown in generated_pages().items():
        if files.get_file_from_path(path) is not None:
            raise ValueError(f"docs/{path} is generated at build time: delete the file")
        files.append(File.generated(config, path, content=markdown))
    return files
