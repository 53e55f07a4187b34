"""Benchmark figures as markdown: the latest of each as tables, or the whole Benchmarks page.

    python -m benchmarks.report [--results DIR] [--page]

For each figure (suite, name, and what distinguishes repeated figures: batch size, variant,
stage...) the newest line of ``results/<suite>.jsonl`` wins. ``bench_paths``' figures come as a
table of their own, each path beside its floor. ``--page`` prints the documentation site's
Benchmarks page instead (the site's build generates it the same way, ``page``): every recorded
demo run and training on the real photos, each with its machine and date, and the latest
figures of the other suites. Nothing on that page is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks._record import RESULTS_DIR

PATHS_SUITE = "paths"  # bench_paths: shown as a table of paths beside their floors
DRIFT_SUITE = "drift"  # bench_drift: flagged share per source, shift, batch size and features
IDENTITY = ("backend", "variant", "stage", "step", "batch_size", "chunk_size", "seed")


def every_row(results: Path = RESULTS_DIR) -> list[dict]:
    """Every recorded figure, each with its ``suite`` (the file's name), in file order."""
    rows = []
    for path in sorted(results.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
            rows.append({**row, "suite": path.stem})
    return rows


def newest_of_each(rows: list[dict]) -> list[dict]:
    """The newest line of each figure, ordered by suite and then first appearance."""
    newest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["suite"], row["name"], *(str(row.get(field, "")) for field in IDENTITY))
        if key not in newest or row["recorded_at"] >= newest[key]["recorded_at"]:
            newest[key] = row
    return list(newest.values())


def latest(results: Path = RESULTS_DIR) -> list[dict]:
    """The newest line of each figure in ``results``."""
    return newest_of_each(every_row(results))


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
    lines = ["| suite | figure | value | data | machine | recorded |", "|---|---|---:|---|---|---|"]
    lines += [f"| {row['suite']} | {_cell(_figure(row))} | {row['value']} {row['unit']} | "
              f"{_cell(row['data'])} | {_cell(row['machine'])} | {row['recorded_at'][:10]} |"
              for row in rows]
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


PAGE_INTRO = """\
# Benchmarks

Every figure on this page is generated from `benchmarks/results/*.jsonl` when the site is built;
none is typed by hand. Each benchmark (`benchmarks/bench_*.py`, all of them: `make bench`)
appends one JSON line per figure with the machine and the time it was measured. A figure means
something only for its machine, and only when nothing else ran on the cores meanwhile
(see [Development](developing.md#benchmarks-and-timings)).
"""


def page(results: Path = RESULTS_DIR) -> str:
    """The documentation site's Benchmarks page, from every line under ``results``."""
    rows = every_row(results)
    if not rows:
        return PAGE_INTRO + "\nNo benchmark results yet: run `make bench`.\n"
    other = [row for row in newest_of_each(rows)
             if row["suite"] not in ("demo", "real", DRIFT_SUITE)]
    sections = [
        ("The demo, per seed",
         "`python -m benchmarks.bench_demo --seeds N` runs the default `carsdepo demo` from an "
         "empty state folder and records the loop's outcome, then scores the final champion on "
         "a fixed synthetic batch no demo sees (*unseen*). Newest first.",
         demo_runs_table(rows)),
        ("The demo's steps", "Seconds per step of the newest day's demo runs.",
         demo_steps_table(rows)),
        ("Training on the real photos",
         "`make train-real` (the `real_cpu` preset) on the lensor photos, evaluated on their "
         "published test split; recorded by `python -m benchmarks.bench_real --reuse`.",
         real_runs_table([r for r in rows if r.get("preset") == "real_cpu"])),
        ("The ablation",
         "`python -m benchmarks.bench_real --ablation`: each variant of the small-damage design "
         "at the `real_cpu_short` budget (see the [design notes](design.md)). *Baseline* undoes "
         "every change; *X only* is the baseline with that one change.",
         real_runs_table([r for r in rows if r.get("preset") == "real_cpu_short"])),
        ("The ablation over seeds",
         "The variants of the ablation trained with several seeds "
         "(`python -m benchmarks.bench_real --ablation --seeds 0 1 2`): each figure's mean and, "
         "in brackets, its range over the seeds. A row with \"+\" is the same models evaluated "
         "again another way (the mirrored pass, operating points chosen on val).",
         seed_summary_table([r for r in rows if r.get("preset") == "real_cpu_short"])),
        ("Other evaluations of a real-photo model",
         "A trained model evaluated again with other settings "
         "(`python -m benchmarks.bench_real --reuse --eval-sizes ...`).",
         real_runs_table([r for r in rows if r["suite"] == "real" and "preset" not in r])),
        ("Training speed on the real photos",
         "`python -m benchmarks.bench_real --train-speed 20 [--malloc-default]`.",
         rows_table([r for r in rows if r["name"] == "real_train_images_per_s"],
                    ("variant", "malloc"))),
        ("Sliced prediction of a large photo",
         "A `real_cpu` model on lensor test photos enlarged to 1600x1200 (the tiles and the "
         "whole-image pass), median of one photo at a time.",
         rows_table([r for r in rows if r["name"] == "real_native_ms_per_photo_p50"],
                    ("model_version", "target", "target_met"))),
        ("Drift: what each signal catches",
         "`python -m benchmarks.bench_drift`: the share of batches (in %) whose decision is not "
         "`no_action`, with today's light features alone / with the content signal added, per "
         "shift and batch size; *clean* batches give the false-alarm rate. Each cell's trials "
         "and the embedding used are in the results file.",
         drift_table([r for r in newest_of_each(rows) if r["suite"] == DRIFT_SUITE])),
        ("Every path beside its floor",
         "`python -m benchmarks.bench_paths`: each path a user runs beside the floor it cannot "
         "beat, on the same synthetic panels; `ratio` is the path's figure over its floor's.",
         paths_table(other)),
        ("The other suites", "The newest figure of each.", figures_table(other)),
    ]
    body = [f"## {title}\n\n{what}\n\n{table}" for title, what, table in sections if table]
    return PAGE_INTRO + "\n" + "\n\n".join(body) + "\n"


def drift_table(rows: list[dict]) -> str:
    """Per source, one line per shift: "light / light+content" flagged % at each batch size."""
    cells: dict[tuple, dict[str, float]] = {}
    sizes: set[int] = set()
    for row in rows:
        cells.setdefault((row["source"], row["shift"], row["batch_size"]), {})[
            row["features"]] = row["value"]
        sizes.add(row["batch_size"])
    if not cells:
        return ""
    ordered = sorted(sizes)
    lines = ["| source | shift | " + " | ".join(f"n={size}" for size in ordered) + " |",
             "|---|---|" + "---:|" * len(ordered)]
    for source, shift in dict.fromkeys((key[0], key[1]) for key in cells):
        values = [cells.get((source, shift, size), {}) for size in ordered]
        lines.append(f"| {source} | {shift} | " + " | ".join(
            f"{_number(v.get('light'), 1)} / {_number(v.get('light+content'), 1)}"
            for v in values) + " |")
    machine = {row["machine"] for row in rows}
    recorded = max(row["recorded_at"] for row in rows)[:10]
    return "\n".join(lines) + f"\n\nMachine: {', '.join(sorted(machine))}; recorded {recorded}."


def _number(value: object, digits: int = 3) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_bound(row: dict, name: str) -> str:
    if name not in row:
        return "—"
    return f"{_number(row[name])} ({_number(row.get(name + '_lower_bound'))})"


def demo_runs_table(rows: list[dict]) -> str:
    """One line per recorded ``bench_demo`` run, newest first."""
    runs = sorted((r for r in rows if r["suite"] == "demo" and r["name"] == "demo_run"),
                  key=lambda r: r["recorded_at"], reverse=True)
    if not runs:
        return ""
    lines = ["| recorded | machine | seed | wall | iterations trained: first / second model | "
             "first model: test AP50 (lower bound) | "
             "pre-annotations reviewed: accepted / adjusted / deleted / drawn | "
             "second model: test AP50 (lower bound) | champions | "
             "unseen AP50 (scratch / dent): the final champion; the other versions | "
             "unseen \"None\" accuracy | targets missed |",
             "|---|---|---:|---:|---|---|---|---|---|---|---:|---|"]
    for run in runs:
        review = run.get("prelabel_review")
        reviewed = (" / ".join(str(review[k]) for k in ("accepted", "adjusted", "deleted",
                                                      "drawn")) if review else "—")
        missed = [name for name, met in run.get("targets_met", {}).items() if not met]
        unseen = _unseen(run)
        lines.append(
            f"| {run['recorded_at'][:10]} | {_cell(run['machine'])} | {run.get('seed', '—')} | "
            f"{run['value']:.0f} {run['unit']}{_under_load(run)} | {_iterations(run)} | "
            f"{_with_bound(run, 'test_AP50')} | {reviewed} | "
            f"{_with_bound(run, 'v2_test_AP50')} | "
            f"{_cell(' -> '.join(run.get('champions', [])) or '—')} | {unseen} | "
            f"{_number(run.get('unseen_none_accuracy'), 2)} | "
            f"{', '.join(missed) if missed else 'none'} |")
    targets = runs[0].get("targets")
    if targets:
        lines += ["", "Targets of the newest run: " + ", ".join(
            f"{name} {'at most' if name.endswith('_s') else 'at least'} {value}"
            for name, value in targets.items()) + "; and a champion that answered a batch."]
    return "\n".join(lines)


def _unseen(run: dict) -> str:
    """The final champion's unseen AP50 (scratch / dent) and, where the run recorded them, each
    registered version's (newer runs): "0.941 (0.926 / 0.957); v1 0.930 (0.905 / 0.955)"."""
    def figures(quality: dict, prefix: str) -> str:
        return (f"{_number(quality.get(prefix + 'AP50'))} "
                f"({_number(quality.get(prefix + 'AP50_scratch'))} / "
                f"{_number(quality.get(prefix + 'AP50_dent'))})")

    champion = figures(run, "unseen_")
    others = [f"v{version} {figures(quality, '')}"
              for version, quality in run.get("unseen_by_version", {}).items()
              if not run.get("champions") or not run["champions"][-1].endswith(f" v{version}")]
    return "; ".join([champion, *others])


def _iterations(run: dict) -> str:
    """'315 / 142 (time budget)': each training's iterations, and what ended them when it was
    the time budget (runs recorded before the budget existed: —)."""
    trainings = [run[key] for key in ("v1_training", "v2_training") if key in run]
    if not trainings:
        return "—"
    cells = [str(training["iterations"]) + (" (time budget)" if training.get("stopped_by")
                                            == "time budget" else "")
             for training in trainings]
    return " / ".join(cells)


def _under_load(run: dict) -> str:
    """How a run measured beside another busy process (``bench_demo --busy-after``) says so."""
    busy = run.get("busy_after_s")
    return "" if busy is None else f" (one other busy process from {busy:.0f} s)"


def demo_steps_table(rows: list[dict]) -> str:
    """Seconds per step (summed where a step ran more than once) of the newest day's runs."""
    steps = [r for r in rows if r["suite"] == "demo" and r["name"] == "demo_step_s"]
    if not steps:
        return ""
    newest_day = max(r["recorded_at"][:10] for r in steps)
    seeds = {r["recorded_at"]: r.get("seed") for r in rows if r["name"] == "demo_run"}
    runs = sorted({r["recorded_at"] for r in steps if r["recorded_at"][:10] == newest_day})
    seconds: dict[str, dict[str, float]] = {}
    for row in steps:
        if row["recorded_at"] in runs:
            per_run = seconds.setdefault(row["step"], {})
            per_run[row["recorded_at"]] = per_run.get(row["recorded_at"], 0) + row["value"]
    machines = sorted({r["machine"] for r in steps if r["recorded_at"] in runs})
    lines = ["| step | " + " | ".join(f"seed {seeds.get(run, '?')}" for run in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    lines += [f"| {_cell(step)} | " + " | ".join(_number(per_run.get(run)) for run in runs)
              + " |" for step, per_run in seconds.items()]
    lines += ["", f"Recorded {newest_day} on {'; '.join(machines)}."]
    return "\n".join(lines)


# real.jsonl: the figures of one training or evaluation share its recorded_at
REAL_COLUMNS = (("AP50", "real_test_AP50"), ("AP", "real_test_AP"),
                ("scratch AP50", "real_test_AP50_scratch"), ("dent AP50", "real_test_AP50_dent"),
                ("damage AP50", "real_test_damage_AP50"), ("APs", "real_test_APs"),
                ("AP75", "real_test_AP75"), ("\"None\" accuracy", "real_test_none_accuracy"),
                ("precision", "real_test_precision"), ("recall", "real_test_recall"),
                ("ms/photo", "real_test_ms_per_image"))


def real_runs_table(rows: list[dict]) -> str:
    """One line per training or evaluation on the real photos, oldest first."""
    runs: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["name"].startswith("real_test_") or row["name"] == "real_train_wall":
            runs.setdefault(row["recorded_at"], {})[row["name"]] = row
    if not runs:
        return ""
    lines = ["| recorded | machine | variant | budget | " + " | ".join(
                 header for header, _ in REAL_COLUMNS) + " | training | crops/s |",
             "|---|---|---|---|" + "---:|" * (len(REAL_COLUMNS) + 2)]
    seen: set[tuple] = set()
    for recorded, figures in sorted(runs.items()):
        first = next(iter(figures.values()))
        fingerprint = (first.get("variant"), first["data"],
                       tuple(sorted((name, row["value"]) for name, row in figures.items())))
        if fingerprint in seen:  # the same run recorded again (bench_real --reuse)
            continue
        seen.add(fingerprint)
        wall = figures.get("real_train_wall")
        budget = first["data"].split(": ", 1)[-1] if "preset" in first else first["data"]
        training = f"{wall['value'] / 60:.1f} min" if wall else "—"
        lines.append(
            f"| {recorded[:10]} | {_cell(first['machine'])} | "
            f"{_cell(first.get('variant') or first.get('preset', ''))} | {_cell(budget)} | "
            + " | ".join(_number(figures[name]["value"], 3 if name != "real_test_ms_per_image"
                                 else 0) if name in figures else "—"
                         for _, name in REAL_COLUMNS)
            + f" | {training} | "
            f"{_number(wall.get('images_per_s'), 2) if wall else '—'} |")
    return "\n".join(lines)


# an ablation run of one seed: "<variant>, seed <n>", maybe followed by " + <evaluated again>"
SEEDED_VARIANT = re.compile(r"^(?P<variant>.*), seed (?P<seed>\d+)(?P<again> \+ .*)?$")


def seed_summary_table(rows: list[dict]) -> str:
    """Each variant trained with several seeds (``bench_real --ablation --seeds``): the mean and
    range of each figure over its seeds (the newest run of each seed)."""
    from benchmarks.bench_real import FIGURES, seed_table

    metric_of = {recorded: metric for metric, recorded in FIGURES}
    runs: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["name"] in metric_of and SEEDED_VARIANT.match(row.get("variant") or ""):
            runs.setdefault(row["variant"], {})[metric_of[row["name"]]] = row["value"]
    by_variant: dict[str, list[dict]] = {}
    for name, metrics in runs.items():
        match = SEEDED_VARIANT.match(name)
        by_variant.setdefault(match["variant"] + (match["again"] or ""), []).append(metrics)
    return seed_table(by_variant) if by_variant else ""


def rows_table(rows: list[dict], qualifiers: tuple[str, ...]) -> str:
    """Recorded figures of one kind, oldest first, with the fields that tell them apart."""
    if not rows:
        return ""
    lines = ["| recorded | machine | " + " | ".join(f.replace("_", " ") for f in qualifiers)
             + " | value | data |", "|---|---|" + "---|" * len(qualifiers) + "---:|---|"]
    lines += [f"| {row['recorded_at'][:16].replace('T', ' ')} | {_cell(row['machine'])} | "
              + " | ".join(_cell(row.get(field, "—")) for field in qualifiers)
              + f" | {row['value']} {row['unit']} | {_cell(row['data'])} |"
              for row in sorted(rows, key=lambda r: r["recorded_at"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--page", action="store_true",
                        help="print the documentation site's whole Benchmarks page")
    args = parser.parse_args(argv)
    print(page(args.results) if args.page else render(latest(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
