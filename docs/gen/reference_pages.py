"""The reference pages, written from the code itself so that they cannot drift from it: the
command line from its parser, the detector configuration from ``DetectorConfig`` and its
presets, the assets, checks, jobs, sensors and resources from the Dagster ``Definitions``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import tokenize
from typing import Any

PYDANTIC_UNSET = "PydanticUndefined"


def _one_line(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cell(text: object) -> str:
    """Text safe inside a markdown table cell: ``<batch>`` outside a code span is text, not an
    HTML tag (inside one, markdown keeps it as it is)."""
    parts = _one_line(text).split("`")
    return "`".join(part if inside else part.replace("<", "&lt;")
                    for part, inside in zip(parts, [False, True] * len(parts), strict=False))


def code(value: object) -> str:
    return f"`{_one_line(value)}`" if value not in ("", None) else ""


# --- the command line ---------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=96)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser.formatter_class(prog=parser.prog)
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = ", ".join(action.option_strings) or (action.metavar or action.dest)
        takes_value = action.nargs != 0
        shown = takes_value and action.default not in (None, [], argparse.SUPPRESS)
        default = action.default if shown else ""
        choices = ", ".join(map(str, action.choices)) if action.choices else ""
        help_text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {code(name)} | {code(default)} | {cell(choices)} | {cell(help_text)} |")
    return rows


def cli_page(parser: argparse.ArgumentParser) -> str:
    """Every command of ``parser`` with its usage and options, in ``--help``'s order."""
    lines = ["# Command line", "",
             "Generated from the parser of `carsdepo` when the site is built: what is here is "
             "what `carsdepo COMMAND --help` says. Every command reads its state folder from "
             "`CARSDEPO_HOME` (default `.carsdepo/` in the checkout).", "",
             cell(parser.description), ""]
    lines += _commands(parser, "carsdepo")
    return "\n".join(lines) + "\n"


def _commands(parser: argparse.ArgumentParser, prefix: str, level: int = 2) -> list[str]:
    lines = []
    for name, sub in _subcommands(parser).items():
        full = f"{prefix} {name}"
        lines += [f"{'#' * level} `{full}`", "", cell(sub.description or ""), "",
                  "```text", _usage(sub), "```", ""]
        options = _option_rows(sub)
        if options:
            lines += ["| argument | default | choices | meaning |", "|---|---|---|---|",
                      *options, ""]
        lines += _commands(sub, full, min(level + 1, 4))
    return lines


# --- the detector configuration ---------------------------------------------------------------

def _field_comments(cls: type) -> tuple[dict[str, str], dict[str, str]]:
    """The comments beside and above each field of a dataclass' source: ``{field: text}``, and
    ``{field: section}`` for the short heading comments (``# optimisation``) that open a group."""
    source = inspect.getsource(cls)
    fields = {field.name for field in dataclasses.fields(cls)}
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    texts: dict[str, str] = {}
    sections: dict[str, str] = {}
    above: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(comments[number])
            continue
        name = stripped.split(":", 1)[0].strip()
        if name in fields and ":" in stripped:
            if len(above) == 1 and len(above[0].split()) <= 3 and not above[0].endswith(")"):
                sections[name], above = above[0], []
            beside = comments.get(number, "")
            texts[name] = " ".join([*above, beside]).strip()
        above = []
    return texts, sections


def config_page() -> str:
    """``DetectorConfig``'s fields (the ``cpu`` defaults), then each preset's changes."""
    from carsdepo_assets.detection import config

    texts, sections = _field_comments(config.DetectorConfig)
    defaults = config.DetectorConfig().to_dict()
    lines = ["# Detector configuration", "",
             "Generated from `carsdepo_assets/detection/config.py` when the site is built. The "
             "`detector` asset's `config` (in the Dagster launchpad), `carsdepo train-real "
             "--set KEY=VALUE` and the presets all set these fields; an unknown field is an "
             "error that names it, and the resolved configuration is saved with every model and "
             "logged to MLflow.", "",
             "## Fields and their defaults (the `cpu` preset)", ""]
    for field in dataclasses.fields(config.DetectorConfig):
        if field.name in sections:
            lines += ["", f"### {sections[field.name].capitalize()}", "",
                      "| field | default | meaning |", "|---|---|---|"]
        lines.append(f"| `{field.name}` | {code(defaults[field.name])} | "
                     f"{cell(texts.get(field.name, ''))} |")
    lines += ["", "Choices: " + "; ".join(
        f"`{name.removesuffix('_CHOICES').lower()}`: {', '.join(values)}"
        for name, values in vars(config).items() if name.endswith("_CHOICES")) + ".", "",
        "## Presets", "",
        "A preset is the defaults above with some fields changed; `DetectorConfig.preset(name, "
        "**overrides)` builds one.", ""]
    for name, changes in config.PRESETS.items():
        lines += [f"### `{name}`", ""]
        if not changes:
            lines += ["The defaults above.", ""]
            continue
        resolved = config.DetectorConfig.preset(name).to_dict()
        lines += ["| field | value | default |", "|---|---|---|"]
        lines += [f"| `{key}` | {code(resolved[key])} | {code(defaults[key])} |"
                  for key in changes]
        lines.append("")
    lines += ["## The ablation's variants", "",
              "`python -m benchmarks.bench_real --ablation` trains `real_cpu_short` with each "
              "change undone (*all but X*) or with only that change (*X only*: the others "
              "undone). What undoes each change:", "",
              "| change | fields that undo it |", "|---|---|"]
    lines += [f"| {name} | " + ", ".join(f"`{key}={value}`" for key, value in undo.items()) + " |"
              for name, undo in config.WITHOUT_CHANGE.items()]
    return "\n".join(lines) + "\n"


# --- the Dagster catalogue ----------------------------------------------------------------

def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0]


def catalogue_page(defs: Any) -> str:
    """Assets by group, their checks, the jobs, the sensors and the resources of ``defs``."""
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    lines = ["# Assets, checks, jobs and sensors", "",
             "Generated from `carsdepo_assets.definitions.defs`, the one code location, when "
             "the site is built: what `make dev` shows. `[batch]` marks an asset partitioned "
             "by batch (a dynamic partition per arriving folder of photos).", ""]
    nodes = sorted((graph.get(key) for key in graph.get_all_asset_keys()),
                   key=lambda node: (node.group_name, node.key.to_user_string()))
    lines += ["## Assets", "", "```mermaid", "flowchart LR"]
    lines += [f"  {parent.to_user_string()} --> {node.key.to_user_string()}"
              for node in nodes for parent in sorted(node.parent_keys,
                                                     key=lambda k: k.to_user_string())]
    lines += ["```", "", "| asset | group | upstream | what it is |", "|---|---|---|---|"]
    for node in nodes:
        name = node.key.to_user_string() + ("[batch]" if node.partitions_def else "")
        upstream = ", ".join(sorted(f"`{k.to_user_string()}`" for k in node.parent_keys))
        lines.append(f"| `{name}` | {node.group_name} | {upstream} | "
                     f"{cell(node.description or '')} |")
    lines.append("")
    checks = sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    lines += ["## Asset checks", "",
              "A *blocking* check that fails stops the run before anything downstream of its "
              "asset is materialized.", "",
              "| asset | check | blocking | what it checks |", "|---|---|---|---|"]
    for key in checks:
        node = graph.get(key)
        lines.append(f"| `{key.asset_key.to_user_string()}` | `{key.name}` | "
                     f"{'yes' if node.blocking else ''} | {cell(node.description or '')} |")
    lines += ["", "## Jobs", "", "| job | assets | what it does |", "|---|---|---|"]
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        assets = ", ".join(sorted(f"`{k.to_user_string()}`"
                                  for k in job.asset_layer.selected_asset_keys))
        lines.append(f"| `{job.name}` | {assets} | {cell(job.description or '')} |")
    lines += ["", "## Sensors", "",
              "Every sensor is on by default; the Automation page of the Dagster UI switches "
              "one off.", "",
              "| sensor | every | starts | what it does |", "|---|---|---|---|"]
    for sensor in sorted(repository.sensor_defs, key=lambda s: s.name):
        jobs = ", ".join(f"`{job.name}`" for job in sensor.jobs) if sensor.has_jobs else ""
        lines.append(f"| `{sensor.name}` | {sensor.minimum_interval_seconds} s | {jobs} | "
                     f"{cell(sensor.description or '')} |")
    lines += ["", "## Resources", "",
              "Each resource's settings, with the defaults the embedded code location uses.", ""]
    for key, resource in defs.resources.items():
        kind = type(resource)
        fields = getattr(kind, "model_fields", {})
        what = getattr(resource, "description", None) if not fields else kind.__doc__
        lines += [f"### `{key}` ({kind.__name__})", "", cell(_first_line(what)), ""]
        if fields:
            lines += ["| setting | default | meaning |", "|---|---|---|"]
            for name, field in fields.items():
                default = "" if str(field.default) == PYDANTIC_UNSET else field.default
                lines.append(f"| `{name}` | {code(default)} | {cell(field.description or '')} |")
            lines.append("")
    return "\n".join(lines) + "\n"
