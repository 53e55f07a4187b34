"""The latest benchmark figures as a markdown table, for the README.

    python -m benchmarks.report [--results DIR] [--update README.md]

For each figure (suite, name, and what distinguishes repeated figures: batch size, variant,
stage...) the newest line of ``results/<suite>.jsonl`` wins. ``bench_paths``' figures come as a
table of their own, each path beside its floor. ``--update FILE`` replaces the text between
``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` in FILE with the figures table, and
between ``<!-- paths:start -->`` and ``<!-- paths:end -->`` with the paths table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks._record import RESULTS_DIR

PATHS_SUITE = "paths"  # bench_paths: shown as a table of paths beside their floors
IDENTITY = ("backend", "variant", "stage", "step", "batch_size", "chunk_size", "seed")
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
PATHS_START, PATHS_END = "<!-- paths:start -->", "<!-- paths:end -->"


def latest(results: Path = RESULTS_DIR) -> list[dict]:
    """The newest line of each figure, ordered by suite and then first appearance."""
    newest: dict[tuple, dict] = {}
    for path in sorted(results.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
            row["suite"] = path.stem
            key = (path.stem, row["name"], *(str(row.get(field, "")) for field in IDENTITY))
            if key not in newest or row["recorded_at"] >= newest[key]["recorded_at"]:
                newest[key] = row
    return list(newest.values())


def _figure(row: dict) -> str:
    qualifiers = [f"{field.replace('_', ' ')} {row[field]}" for field in IDENTITY if field in row]
    return row["name"] + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def _cell(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def render(rows: list[dict]) -> str:
    """The paths table (``bench_paths``), then every other figure."""
    if not rows:
        return "No benchmark results yet: run `make bench`."
    return "\n\n".join(filter(None, [paths_table(rows), figures_table(rows)]))


def figures_table(rows: list[dict]) -> str:
    """Every figure but ``bench_paths``' as one table ("" when there is none)."""
    rows = [row for row in rows if row["suite"] != PATHS_SUITE]
    if not rows:
        return ""
    machines = sorted({row["machine"] for row in rows})
    lines = ["| suite | figure | value | data | recorded |", "|---|---|---:|---|---|"]
    lines += [f"| {row['suite']} | {_cell(_figure(row))} | {row['value']} {row['unit']} | "
              f"{_cell(row['data'])} | {row['recorded_at'][:10]} |" for row in rows]
    lines += ["", "Measured on: " + "; ".join(machines) + "."]
    return "\n".join(lines)


def paths_table(rows: list[dict]) -> str:
    """``bench_paths``' figures side by side with their floors, ratios and targets ("" when
    there is none)."""
    rows = [row for row in rows if row["suite"] == PATHS_SUITE]
    if not rows:
        return ""
    by_name = {row["name"]: row for row in rows}
    lines = ["| path | figure | floor | floor's figure | ratio | target | met |",
             "|---|---:|---|---:|---:|---|---|"]
    for row in rows:
        floor = by_name.get(row.get("floor", ""))
        target = row.get("target", "")
        lines.append(
            f"| {_figure(row)} | {row['value']} {row['unit']} | {row.get('floor', '')} | "
            + (f"{floor['value']} {floor['unit']}" if floor else "")
            + f" | {row.get('ratio', '')} | {target} | {_target_met(row, target)} |")
    machines = sorted({row["machine"] for row in rows})
    dates = sorted({row["recorded_at"][:16].replace("T", " ") for row in rows})
    lines += ["", f"One run of `python -m benchmarks.bench_paths`, {dates[0]} to {dates[-1]} UTC, "
              f"on {'; '.join(machines)}."]
    return "\n".join(lines)


def _target_met(row: dict, target: str) -> str:
    """``>= 0.7`` compares the ratio; ``>= 200 images/s`` (a unit) the figure itself."""
    if not target or row.get("ratio") is None:
        return ""
    for condition in target.split(" and "):
        operator, number, *unit = condition.split()
        value = row["value"] if unit else row["ratio"]
        if not (value >= float(number) if operator == ">=" else value <= float(number)):
            return "missed"
    return "met"


def update(path: Path, table: str, start: str = START, end: str = END) -> None:
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} section to replace")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--update", type=Path, metavar="FILE",
                        help="write the tables into FILE between their markers")
    args = parser.parse_args(argv)
    rows = latest(args.results)
    if args.update:
        update(args.update, figures_table(rows))
        update(args.update, paths_table(rows), PATHS_START, PATHS_END)
    else:
        print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
