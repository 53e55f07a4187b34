"""The latest benchmark figures as a markdown table, for the README.

    python -m benchmarks.report [--results DIR] [--update README.md]

For each figure (suite, name, and what distinguishes repeated figures: batch size, variant,
stage...) the newest line of ``results/<suite>.jsonl`` wins. ``--update FILE`` replaces the text
between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` in FILE with the table.
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
    if not rows:
        return "No benchmark results yet: run `make bench`."
    paths = [row for row in rows if row["suite"] == PATHS_SUITE]
    rows = [row for row in rows if row["suite"] != PATHS_SUITE]
    sections = [paths_table(paths)] if paths else []
    if rows:
        machines = sorted({row["machine"] for row in rows})
        lines = ["| suite | figure | value | data | recorded |", "|---|---|---:|---|---|"]
        lines += [f"| {row['suite']} | {_cell(_figure(row))} | {row['value']} {row['unit']} | "
                  f"{_cell(row['data'])} | {row['recorded_at'][:10]} |" for row in rows]
        lines += ["", "Measured on: " + "; ".join(machines) + "."]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def paths_table(rows: list[dict]) -> str:
    """``bench_paths``' figures side by side with their floors, ratios and targets."""
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


def update(path: Path, table: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} section to replace")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--update", type=Path, metavar="FILE",
                        help="write the table into FILE between the benchmark markers")
    args = parser.parse_args(argv)
    table = render(latest(args.results))
    if args.update:
        update(args.update, table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
