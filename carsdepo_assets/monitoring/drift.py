"""Drift between a reference profile and a batch profile: per-feature KS tests and one score.

Per feature, whylogs' ``calculate_drift_scores`` runs a two-sample Kolmogorov-Smirnov test on
the two KLL sketches and gives the KS statistic ``D`` (the largest gap between the two
cumulative distributions: the share of images whose feature value would have to move for the
distributions to match) and its p-value. Because several features are tested at once, a
feature counts as drifted when its p-value is below ``alpha / m`` for ``m`` tested features
of its signal (Bonferroni, see "Signals" below), which keeps the chance of any false alarm of
a signal in a same-distribution batch near ``alpha``. Features significant at ``alpha`` alone
are reported as possible drift.

The batch deviation score, in percent
-------------------------------------
::

    deviation = 100 * max over scored features of max(0, D - D_crit)

where ``D_crit`` is the KS distance at which the p-value equals ``alpha / m`` for the two
sample sizes. ``D - D_crit`` is how far the observed gap exceeds what chance alone can produce
at this batch size; it is a lower confidence bound on the true distance between the two
distributions. Read it as: "with confidence ``1 - alpha``, at least ``deviation`` percent of
the batch's images differ from the reference in this feature". It is 0 whenever no feature is
significant, so a batch from the reference's distribution scores 0 (or a few percent in the
rare false alarm) at any size, while a real shift is counted at its size, less the
sampling-noise margin. A plain ``100 * D`` would not do: ``D`` is noisy (about 0.3 for 30
images of the very same distribution), so even a chance result would read as a large drift.

Scored features: every tested feature except image width and height (:data:`UNSCORED`). A
camera with another resolution is reported (its test is in the table) but is not by itself a
reason to retrain, since all appearance features are computed on images downscaled to one size.
Constant features (width, say, when every photo is 640 px wide) need no special case: two
equal constants give ``D = 0``, different constants ``D = 1``.

Signals
-------
Each feature belongs to one signal (:func:`signal_of`): ``light`` (the image statistics of
:mod:`~carsdepo_assets.monitoring.features`: how the photos are lit, exposed and sized),
``content`` (the principal components of backbone embeddings, :mod:`.embedding`: what the
photos show) and ``outputs`` (the model's answers: "None" share, scores, boxes per photo and
class). Each signal is its own family of tests with its own Bonferroni bound ``alpha / m``
over its ``m`` tested features, so adding content components does not weaken the light tests:
a lighting shift is decided exactly as before. All signals feed the one deviation score (the
largest excess of any scored feature), so the decision rule is unchanged. With three families
the chance that some feature is flagged as DRIFT in a same-distribution batch is at most
``3 * alpha``; a decision needs ``retrain_at`` (5) percentage points beyond the critical
distance on top of that, and ``benchmarks/bench_drift.py`` measures the resulting false-alarm
rate of the decisions on clean batches. The report adds, per signal, its own largest excess
and which of its features drifted, to say *which* signal moved.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from carsdepo_assets.monitoring.embedding import is_content_feature
from carsdepo_assets.monitoring.features import PREDICTION_FEATURES
from carsdepo_assets.monitoring.profiles import format_number, profile_summary, row_count

if TYPE_CHECKING:
    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView

# whylogs and scipy are imported by the functions that use them: the Dagster code location
# needs this module's report types and constants, and must load without them.

DEFAULT_ALPHA = 0.05
UNSCORED: frozenset[str] = frozenset({"width", "height"})

OK = "ok"
EMPTY_REFERENCE = "empty_reference"
EMPTY_BATCH = "empty_batch"
NO_COMMON_FEATURES = "no_common_features"

LIGHT = "light"
CONTENT = "content"
OUTPUTS = "outputs"
SIGNALS = (LIGHT, CONTENT, OUTPUTS)

DRIFT = "DRIFT"
POSSIBLE_DRIFT = "POSSIBLE_DRIFT"
NO_DRIFT = "NO_DRIFT"
NOT_TESTED = "NOT_TESTED"

_PLOT_BINS = 30
_REFERENCE_STYLE = {"color": "tab:blue", "fill": True, "alpha": 0.45}
_BATCH_STYLE = {"color": "tab:orange", "linewidth": 1.5}


@dataclass(frozen=True)
class FeatureDrift:
    """The KS test of one feature; ``excess`` (0..1) is its contribution to the deviation."""

    feature: str
    category: str
    statistic: float | None = None
    p_value: float | None = None
    critical: float | None = None
    excess: float = 0.0
    scored: bool = True
    reference_median: float = math.nan
    batch_median: float = math.nan
    note: str = ""

    @property
    def median_change_pct(self) -> float:
        """Relative change of the median, in percent (NaN where the reference median is 0)."""
        if not self.reference_median or math.isnan(self.reference_median):
            return math.nan
        return 100.0 * (self.batch_median - self.reference_median) / abs(self.reference_median)

    def describe(self) -> str:
        """One line for a decision's reasons: which feature, how far, how sure."""
        change = self.median_change_pct
        moved = f" ({change:+.0f}%)" if not math.isnan(change) else ""
        return (
            f"{self.feature}: {100 * self.excess:.1f}% beyond chance (KS D={self.statistic:.3f}, "
            f"p={self.p_value:.2g}); median {format_number(self.reference_median)} -> "
            f"{format_number(self.batch_median)}{moved}"
        )


def signal_of(feature: str) -> str:
    """The signal a profiled feature belongs to: content, outputs, or light (the rest)."""
    if is_content_feature(feature):
        return CONTENT
    if feature in PREDICTION_FEATURES:
        return OUTPUTS
    return LIGHT


@dataclass(frozen=True)
class SignalDrift:
    """One signal's share of a report: its largest excess (percent) and drifted features."""

    signal: str
    corrected_alpha: float
    deviation: float
    tested: int
    drifted: tuple[str, ...]

    @property
    def moved(self) -> bool:
        return self.deviation > 0.0

    def describe(self) -> str:
        if not self.tested:
            return f"{self.signal}: not profiled"
        tested = f"{self.tested} features at p < {self.corrected_alpha:.2g}"
        if not self.moved:
            return f"{self.signal}: no shift ({tested})"
        return (f"{self.signal}: moved, {self.deviation:.1f}% beyond chance ({tested}; "
                f"drifted: {', '.join(self.drifted)})")


@dataclass(frozen=True)
class DriftReport:
    """Everything the drift stage found for one batch; ``status`` is :data:`OK` when usable."""

    status: str
    message: str
    deviation: float
    alpha: float
    corrected_alpha: float
    reference_rows: int
    batch_rows: int
    features: tuple[FeatureDrift, ...] = ()
    missing_in_batch: tuple[str, ...] = ()
    missing_in_reference: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    signal_alpha: dict[str, float] = field(default_factory=dict)

    @property
    def signals(self) -> tuple[SignalDrift, ...]:
        """Per signal (light, content, outputs): deviation, tested and drifted features."""
        result = []
        for signal in SIGNALS:
            members = [item for item in self.features if signal_of(item.feature) == signal]
            scored = [item for item in members if item.scored]
            result.append(SignalDrift(
                signal, corrected_alpha=self.signal_alpha.get(signal, self.corrected_alpha),
                deviation=100.0 * max((item.excess for item in scored), default=0.0),
                tested=sum(item.statistic is not None for item in members),
                drifted=tuple(item.feature for item in scored if item.category == DRIFT),
            ))
        return tuple(result)

    @property
    def moved_signals(self) -> tuple[str, ...]:
        """The signals whose scored features drifted beyond chance, in :data:`SIGNALS` order."""
        return tuple(item.signal for item in self.signals if item.moved)

    def top_drivers(self, per_signal: int = 3) -> tuple[FeatureDrift, ...]:
        """The largest contributions of each moved signal, for a plot that shows every one."""
        chosen = []
        for signal in self.moved_signals:
            chosen += [item for item in self.drivers
                       if signal_of(item.feature) == signal][:per_signal]
        return tuple(chosen)

    @property
    def drifted(self) -> tuple[FeatureDrift, ...]:
        """Features whose KS test is significant after the correction for several tests."""
        return tuple(item for item in self.features if item.category == DRIFT)

    @property
    def drivers(self) -> tuple[FeatureDrift, ...]:
        """Scored drifted features, largest contribution to the deviation first."""
        scored = [item for item in self.drifted if item.scored]
        return tuple(sorted(scored, key=lambda item: item.excess, reverse=True))

    def to_dict(self) -> dict:
        """Plain data for JSON metadata; NaN (an empty distribution's median) becomes None."""
        payload = asdict(self)
        payload["drifted"] = [item.feature for item in self.drifted]
        payload["signals"] = [{**asdict(item), "moved": item.moved} for item in self.signals]
        payload["moved_signals"] = list(self.moved_signals)
        for item in payload["features"]:
            item.update({key: None for key, value in item.items()
                         if isinstance(value, float) and math.isnan(value)})
        return payload

    def to_markdown(self) -> str:
        """A summary line and one table row per feature, for the Dagster UI."""
        head = (
            f"**Deviation {self.deviation:.1f}%** ({self.message}); reference {self.reference_rows}"
            f" rows, batch {self.batch_rows} rows, alpha {self.alpha:g} "
            f"(per feature: alpha / features tested in its signal)."
        )
        head += "\n\n" + "; ".join(item.describe() for item in self.signals) + "."
        head += "".join(f"\n\n{note}" for note in self.notes)
        if not self.features:
            return head
        lines = [
            head,
            "",
            "| feature | KS D | p-value | critical D | beyond chance | category | "
            "reference median | batch median |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        for item in self.features:
            cells = [
                item.feature + ("" if item.scored else " (not scored)"),
                _maybe(item.statistic, "{:.3f}"),
                _maybe(item.p_value, "{:.2g}"),
                _maybe(item.critical, "{:.3f}"),
                f"{100 * item.excess:.1f}%",
                item.category + (f": {item.note}" if item.note else ""),
                format_number(item.reference_median),
                format_number(item.batch_median),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for label, names in (("Missing in batch", self.missing_in_batch),
                             ("Missing in reference", self.missing_in_reference)):
            if names:
                lines.append(f"\n{label} (not compared): {', '.join(names)}")
        return "\n".join(lines)


def drift_report(
    reference: DatasetProfileView, batch: DatasetProfileView, alpha: float = DEFAULT_ALPHA,
    notes: tuple[str, ...] = (),
) -> DriftReport:
    """Compare ``batch`` with ``reference``; see the module docstring for the score.

    Empty profiles and profiles without a common feature give a report whose ``status`` says
    so (deviation 0, no features) rather than an exception: the caller decides what that means.
    ``notes`` (e.g. why a signal was not profiled) are carried into the report as they are.
    """
    from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView

    for name, view in (("reference", reference), ("batch", batch)):
        if not isinstance(view, DatasetProfileView):
            raise TypeError(f"{name} must be a whylogs DatasetProfileView, "
                            f"not {type(view).__name__}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    reference_rows, batch_rows = row_count(reference), row_count(batch)
    reference_summary, batch_summary = profile_summary(reference), profile_summary(batch)
    common = sorted(set(reference_summary) & set(batch_summary))
    base = dict(alpha=alpha, corrected_alpha=alpha, reference_rows=reference_rows,
                batch_rows=batch_rows, deviation=0.0, notes=tuple(notes),
                missing_in_batch=tuple(sorted(set(reference_summary) - set(batch_summary))),
                missing_in_reference=tuple(sorted(set(batch_summary) - set(reference_summary))))
    if reference_rows == 0:
        return DriftReport(EMPTY_REFERENCE, "the reference profile is empty (0 rows)", **base)
    if batch_rows == 0:
        return DriftReport(EMPTY_BATCH, "the batch profile is empty (0 rows): "
                           "the batch has no images to compare", **base)
    if not common:
        return DriftReport(NO_COMMON_FEATURES, "the reference and the batch share no feature",
                           **base)

    testable = [name for name in common
                if reference_summary[name]["count"] > 0 and batch_summary[name]["count"] > 0]
    signal_alpha = {signal: alpha / count for signal in SIGNALS
                    if (count := sum(signal_of(name) == signal for name in testable))}
    scores: dict[str, dict] = {}
    for signal, corrected in signal_alpha.items():
        members = [name for name in testable if signal_of(name) == signal]
        scores.update(_ks_scores(reference, batch, members, alpha, corrected))
    features = tuple(
        _feature_drift(name, scores.get(name), signal_alpha.get(signal_of(name), alpha),
                       reference_summary[name], batch_summary[name])
        for name in common
    )
    deviation = 100.0 * max((item.excess for item in features if item.scored), default=0.0)
    drifted = [item.feature for item in features if item.category == DRIFT]
    message = f"drift in {', '.join(drifted)}" if drifted else "no feature drifted"
    return DriftReport(OK, message, features=features, signal_alpha=signal_alpha,
                       **{**base, "corrected_alpha": min(signal_alpha.values(), default=alpha),
                          "deviation": deviation})


def drift_plot(reference: DatasetProfileView, batch: DatasetProfileView,
               features: list[str] | tuple[str, ...]) -> bytes:
    """PNG of reference vs batch distributions of ``features``, from the profiles' sketches."""
    if not features:
        raise ValueError("drift_plot needs at least one feature to draw")
    columns = min(3, len(features))
    rows = math.ceil(len(features) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), dpi=90, layout="constrained")
    for index, feature in enumerate(features):
        axes = figure.add_subplot(rows, columns, index + 1)
        sides = [(label, _sketch(view, feature, label), style)
                 for label, view, style in (("reference", reference, _REFERENCE_STYLE),
                                            ("batch", batch, _BATCH_STYLE))]
        low = min(sketch.get_min_value() for _, sketch, _ in sides)
        high = max(sketch.get_max_value() for _, sketch, _ in sides)
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, _PLOT_BINS + 1)
        for label, sketch, style in sides:
            masses = np.asarray(sketch.get_pmf(list(edges[1:-1])))
            axes.stairs(masses, edges, label=f"{label} (n={sketch.get_n()})", **style)
        axes.set_title(feature, fontsize=10)
        axes.set_ylabel("share of images", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=7)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _ks_scores(reference: DatasetProfileView, batch: DatasetProfileView, features: list[str],
               alpha: float, corrected: float) -> dict[str, dict]:
    """whylogs' KS test on the testable features only, categories by our two levels."""
    from carsdepo_assets.monitoring.whylogs_compat import (
        KS,
        DatasetProfileView,
        DriftThresholds,
        KSTestConfig,
        calculate_drift_scores,
    )

    if not features:
        return {}
    thresholds = DriftThresholds(NO_DRIFT=(alpha, 1), POSSIBLE_DRIFT=(corrected, alpha),
                                 DRIFT=(0, corrected))
    ks = KS(KSTestConfig(thresholds=thresholds))

    def only(view: DatasetProfileView) -> DatasetProfileView:
        columns = view.get_columns()
        return DatasetProfileView(columns={name: columns[name] for name in features},
                                  dataset_timestamp=None, creation_timestamp=None)

    with warnings.catch_warnings():
        # scipy warns on the degenerate sample sizes we report as "not tested" below.
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = calculate_drift_scores(target_view=only(batch), reference_view=only(reference),
                                        drift_map={name: ks for name in features},
                                        with_thresholds=True)
    return {name: score for name, score in scores.items() if score is not None}


def _feature_drift(name: str, score: dict | None, corrected: float, reference: dict,
                   batch: dict) -> FeatureDrift:
    medians = dict(reference_median=reference["median"], batch_median=batch["median"],
                   scored=name not in UNSCORED)
    if score is None:
        empty = [side for side, stats_ in (("reference", reference), ("batch", batch))
                 if stats_["count"] == 0]
        note = (f"no values in the {' and '.join(empty)}" if empty
                else "too few values for a KS test")
        return FeatureDrift(name, NOT_TESTED, note=note, **medians)
    statistic, p_value = float(score["statistic"]), float(score["pvalue"])
    critical = _critical_distance(corrected, int(reference["count"]), int(batch["count"]))
    return FeatureDrift(
        name, score["drift_category"], statistic=statistic, p_value=p_value, critical=critical,
        excess=max(0.0, statistic - critical) if score["drift_category"] == DRIFT else 0.0,
        **medians,
    )


@functools.lru_cache(maxsize=1024)
def _critical_distance(alpha: float, n_reference: int, n_batch: int) -> float:
    """The KS distance whose p-value is ``alpha``, as whylogs computes p-values (cached: the
    inversion costs tens of milliseconds and a signal's features share their arguments)."""
    from scipy import stats

    effective = round(n_reference * n_batch / (n_reference + n_batch))
    return float(stats.kstwo.isf(alpha, effective))


def _sketch(view: DatasetProfileView, feature: str, label: str):
    column = view.get_column(feature)
    metric = column.get_metric("distribution") if column is not None else None
    if metric is None or metric.kll.value.is_empty():
        raise ValueError(f"the {label} profile has no values for feature {feature!r}")
    return metric.kll.value


def _maybe(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
