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
    machines = sorted({row["machine"] for row in rows})
    lines = ["| suite | figure | value | data | recorded |", "|---|---|---:|---|---|"]
    lines += [f"| {row['suite']} | {_cell(_figure(row))} | {row['value']} {row['unit']} | "
              f"{_cell(row['data'])} | {row['recorded_at'][:10]} |" for row in rows]
    lines += ["", "Measured on: " + "; ".join(machines) + "."]
    return "\n".join(lines)


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
