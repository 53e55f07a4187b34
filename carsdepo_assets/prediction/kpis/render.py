"""The KPI dashboard: a markdown table, PNG plots, and the files ``kpi_report`` writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from carsdepo_assets.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from carsdepo_assets.prediction.kpis.compute import (
    ANSWER_KINDS,
    CHAMPION_METRICS,
    ChampionPoint,
    KpiReport,
)
from carsdepo_assets.taxonomy import SCRATCH
from carsdepo_assets.visual import histogram_png, label_colour, png_bytes


def kpi_markdown(report: KpiReport) -> str:
    """The dashboard's table, one row per KPI, then the notes."""
    rows = [
        ("Automation rate", _share(report.automation_rate),
         f"{report.decided_by_model} decided by the model, {report.sent_to_annotators} sent to "
         f"annotators, {report.pending} pending"),
        ("Labelled share", _share(report.labelled_share),
         f"{report.labelled} of {report.images_held} images held"),
        ("Damage types (model)", str(sum(report.model_answers.images.values())),
         report.model_answers.describe()),
        ("Damage types (annotators)", str(sum(report.labels.images.values())),
         report.labels.describe()),
        ("Annotation throughput", _number(report.annotations_per_active_day, " images/day"),
         f"{sum(report.annotations_per_day.values())} images over "
         f"{len(report.annotations_per_day)} active days"),
        ("Champion AP50", _number(report.headline()["champion_AP50"]), _champion_detail(report)),
        ("Inference latency p50 / p95", _latency_value(report), _latency_detail(report)),
        ("Drift alerts", str(report.drift_alerts),
         ", ".join(f"{action} {count}" for action, count in report.decisions.items())
         or "no decisions recorded"),
    ]
    lines = ["| KPI | value | detail |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {detail} |" for name, value, detail in rows]
    if report.notes:
        lines += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines)


def _champion_detail(report: KpiReport) -> str:
    if not report.champions:
        return "no champion promoted yet"
    last = report.champions[-1]
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in last.metrics.items()) or "no test metrics"
    how = "restored" if last.restored else "promoted"
    return (f"v{last.version} {how} {last.since} ({metrics}); "
            f"{len(report.champions)} champions so far")


def _latency_value(report: KpiReport) -> str:
    overall = report.latency.get("all")
    return f"{overall.p50_ms:.0f} / {overall.p95_ms:.0f} ms" if overall else "n/a"


def _latency_detail(report: KpiReport) -> str:
    parts = [f"{source}: {stats.p50_ms:.0f} / {stats.p95_ms:.0f} ms ({stats.count})"
             for source, stats in report.latency.items() if source != "all"]
    return (", ".join(parts) or "no answers recorded") + f"; last {report.latency_days} days"


def kpi_plots(report: KpiReport) -> dict[str, bytes]:
    """PNG plots for the dashboard, by name."""
    return {
        "damage_types": _distribution_png(report),
        "annotation_throughput": _throughput_png(report.annotations_per_day),
        "champion_ap": _champion_png(report.champions),
        "inference_latency": histogram_png(
            report.latencies_ms, bins=20, xlabel="ms per image",
            title=f"Inference latency, last {report.latency_days} days",
        ),
    }


def save_report(report: KpiReport, plots: Mapping[str, bytes], folder: Path) -> Path:
    """Write ``kpis.json``, the plots and ``dashboard.md`` (showing them) into ``folder``."""
    for name, png in plots.items():
        atomic_write_bytes(folder / f"{name}.png", png)
    atomic_write_json(folder / "kpis.json", report.to_dict())
    pictures = "\n\n".join(f"![{name}]({name}.png)" for name in plots)
    atomic_write_text(folder / "dashboard.md", f"# carsdepo KPIs\n\n{kpi_markdown(report)}\n\n"
                                               f"{pictures}\n")
    return folder / "dashboard.md"


def _distribution_png(report: KpiReport) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    positions = np.arange(len(ANSWER_KINDS))
    for offset, (who, counts) in enumerate((("model", report.model_answers.images),
                                            ("annotators", report.labels.images))):
        axes.bar(positions + (offset - 0.5) * 0.4, [counts[kind] for kind in ANSWER_KINDS],
                 width=0.4, label=who, color=("#4c72b0", "#dd8452")[offset])
    axes.set_xticks(positions, ANSWER_KINDS)
    axes.set_ylabel("images")
    axes.set_title("Damage types")
    axes.legend()
    return png_bytes(figure)


def _throughput_png(counts: Mapping[str, int]) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    if counts:
        axes.bar(list(counts), list(counts.values()), color=tuple(
            c / 255 for c in label_colour(SCRATCH)))
        axes.tick_params(axis="x", labelrotation=45)
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    axes.set_title("Images labelled in Label Studio per day")
    axes.set_ylabel("images")
    return png_bytes(figure)


def _champion_png(points: Sequence[ChampionPoint]) -> bytes:
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.subplots()
    if points:
        steps = range(len(points))
        for name in CHAMPION_METRICS:
            axes.plot(steps, [point.metrics.get(name, np.nan) for point in points],
                      marker="o", label=f"test {name}")
        axes.set_xticks(list(steps), [
            f"v{point.version}{' restored' if point.restored else ''}\n{point.since[:10]}"
            for point in points])
        axes.set_ylim(0, 1)
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no champion yet", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_title("Champion AP over time")
    return png_bytes(figure)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3g}{unit}"
