"""The Streamlit script ``carsdepo app`` runs: three pages (check photos, monitoring, models)
laid out over what the plain modules of this package compute.

Streamlit runs this script again on every interaction; what is costly is kept: the detector
per process (``st.cache_resource``, loaded again only when another version becomes
champion), a submission's answers per session (so the threshold slider only re-filters them),
drift pictures and KPIs until their records change.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from carsdepo_assets.app.launch import AppSettings
from carsdepo_assets.app.limits import PhotoLimits
from carsdepo_assets.app.models import (
    TEST_FIGURES,
    VersionFigures,
    registered_versions,
    rollback_preview,
    with_alias,
)
from carsdepo_assets.app.monitoring import BatchDecision, batch_decisions, drift_picture
from carsdepo_assets.app.photos import (
    CheckedPhoto,
    PhotoCheck,
    PhotoChecker,
    SubmissionTooLarge,
    stored_batch_photos,
    stored_batches,
)
from carsdepo_assets.detection.champion import (
    CHALLENGER,
    CHAMPION,
    MlflowUnreachableError,
    configure_mlflow,
)
from carsdepo_assets.monitoring.decision import EXPERIMENT, NO_ACTION, NO_REFERENCE, RETRAIN
from carsdepo_assets.prediction.inference_log import InferenceLog
from carsdepo_assets.prediction.kpis.collect import collect_kpis
from carsdepo_assets.prediction.kpis.compute import KpiReport
from carsdepo_assets.prediction.models import ModelNotFound, ModelRef, resolve_model
from carsdepo_assets.prediction.pyfunc import load_registered_detector
from carsdepo_assets.state import StateLayout
from carsdepo_assets.taxonomy import NONE_ANSWER

LIMITS = PhotoLimits()
UPLOAD, STORED_BATCH = "Upload photos", "A stored batch"
ACTION_WORDS = {NO_ACTION: "no action", RETRAIN: "retrain", EXPERIMENT: "experiment",
                NO_REFERENCE: "no reference yet"}
KPI_REFRESH_S = 60
PHOTOS_PER_ROW = 3
LISTED_SCORES = 3  # a class with more boxes is shown as a count
LISTED_FEATURES = 3  # drifted features named in a decision's headline


@st.cache_resource(show_spinner=False)
def connected(root: str) -> str:
    """Point MLflow at the state's store, once per process."""
    return configure_mlflow(StateLayout(Path(root)))


@st.cache_resource(max_entries=1, show_spinner="Loading the model…")
def photo_checker(root: str, model_name: str, version: str) -> PhotoChecker:
    """The detector of ``version``, loaded once per process and kept while it answers."""
    model = ModelRef(model_name, version)
    return PhotoChecker(load_registered_detector(model.uri), model,
                        InferenceLog(StateLayout(Path(root)).inference_log))


@st.cache_data(show_spinner=False, max_entries=64)
def drift_png(root: str, decision: BatchDecision) -> bytes | None:
    return drift_picture(StateLayout(Path(root)), decision)


@st.cache_data(show_spinner=False, ttl=KPI_REFRESH_S)
def kpis(root: str, model_name: str) -> KpiReport:
    return collect_kpis(StateLayout(Path(root)), model_name)


def answer_text(answer: str | list[dict]) -> str:
    """``None``, or per damage class its scores (``scratch: 0.98, 0.55``), best first; a class
    with many boxes as a count and its best score."""
    if answer == NONE_ANSWER:
        return NONE_ANSWER
    scores: dict[str, list[float]] = {}
    for found in answer:
        scores.setdefault(found["label"], []).append(found["score"])
    parts = []
    for label, values in scores.items():
        values.sort(reverse=True)
        shown = (", ".join(f"{value:.2f}" for value in values) if len(values) <= LISTED_SCORES
                 else f"{len(values)} boxes, best {values[0]:.2f}")
        parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def show_photo(photo: CheckedPhoto, check: PhotoCheck, threshold: float) -> None:
    answer = answer_text(photo.answer(threshold))
    st.markdown(f"**{photo.name}** — answer: **{answer}**")
    st.image(photo.drawn(threshold), width="stretch",
             caption=f"{photo.name}: {check.model} at threshold {threshold:.2f}")


def submission(settings: AppSettings) -> tuple[str, list[tuple[str, bytes]], list[str]] | None:
    """(a key naming the submission, its photos, photos that could not be read) or None."""
    source = st.radio("Photos", (UPLOAD, STORED_BATCH), horizontal=True,
                      label_visibility="collapsed")
    if source == UPLOAD:
        files = st.file_uploader(
            f"Car photos (JPEG, PNG or WebP; up to {LIMITS.max_photos} at a time, "
            f"{LIMITS.upload_megabytes} MB each)", accept_multiple_files=True)
        if not files:
            return None
        key = "upload:" + ",".join(upload.file_id for upload in files)
        return key, [(upload.name, upload.getvalue()) for upload in files], []
    batches = stored_batches(settings.layout)
    if not batches:
        st.info("No stored batch yet: ingest one (`make demo`, or a folder in landing/).")
        return None
    batch = st.selectbox("Batch", batches)
    if not st.button(f"Check the first {LIMITS.max_photos} photos of {batch}"):
        stored = st.session_state.get("submission")
        return stored if stored and stored[0] == f"batch:{batch}" else None
    photos, unreadable = stored_batch_photos(settings.layout, batch, LIMITS)
    stored = (f"batch:{batch}", photos, unreadable)
    st.session_state["submission"] = stored
    return stored


def check_page(settings: AppSettings) -> None:
    st.title("Check photos")
    try:
        model = resolve_model(settings.model_name, CHAMPION)
    except ModelNotFound as missing:
        st.info(str(missing))
        return
    checker = photo_checker(str(settings.layout.root), model.name, model.version)
    st.caption(f"Answers come from {model} (the champion); its operating threshold is "
               f"{checker.threshold:.2f}. Every answer is recorded in the inference log.")
    submitted = submission(settings)
    if submitted is None:
        return
    key, photos, unreadable = submitted
    for line in unreadable:
        st.error(f"could not be read from the store: {line}")
    answers = st.session_state.get("answers")
    if answers is None or answers[0] != key:
        try:
            with st.spinner("Looking for scratches and dents…"):
                answers = (key, checker.check(photos, LIMITS))
        except SubmissionTooLarge as too_many:
            st.error(str(too_many))
            return
        st.session_state["answers"] = answers
    check = answers[1]
    threshold = st.slider(
        "Score threshold: damage below it is not reported", min_value=check.score_floor,
        max_value=1.0, value=check.threshold, step=0.01,
        help="Moving it re-filters the scores the model gave; the model does not run again. "
             f"Recorded answers use the operating threshold {check.threshold:.2f}.")
    for photo in check.photos:
        if photo.reason is not None:
            st.error(f"**{photo.name}** could not be checked: {photo.reason}")
    answered = [photo for photo in check.photos if photo.reason is None]
    for start in range(0, len(answered), PHOTOS_PER_ROW):
        row = st.columns(PHOTOS_PER_ROW)
        for column, photo in zip(row, answered[start:start + PHOTOS_PER_ROW], strict=False):
            with column:
                show_photo(photo, check, threshold)


def monitoring_page(settings: AppSettings) -> None:
    st.title("Monitoring")
    root = str(settings.layout.root)
    st.header("Drift decisions per batch")
    decisions, problems = batch_decisions(settings.layout)
    for problem in problems:
        st.warning(f"decision skipped: {problem}")
    if not decisions:
        st.info("No batch has been compared with the reference yet.")
    for decision in decisions:
        deviation = ("" if decision.deviation is None
                     else f", deviation {decision.deviation:.1f}%")
        drifted = ", ".join(decision.drifted[:LISTED_FEATURES]) + (
            ", …" if len(decision.drifted) > LISTED_FEATURES else "")
        moved = (f"; {', '.join(decision.moved_signals)} moved ({drifted})"
                 if decision.moved_signals else f"; drifted: {drifted}" if drifted else "")
        with st.expander(f"{decision.batch}: {ACTION_WORDS.get(decision.action, decision.action)}"
                         f"{deviation}{moved}", expanded=decision is decisions[0]):
            st.markdown("\n".join(f"- {reason}" for reason in decision.reasons))
            picture = drift_png(root, decision)
            if picture is not None:
                st.image(picture, caption=f"reference vs {decision.batch}")
    report = kpis(root, settings.model_name)
    show_kpis(report)


def show_kpis(report: KpiReport) -> None:
    st.header("The champion's test AP over versions")
    if report.champions:
        history = pd.DataFrame(
            [{"champion": f"v{point.version}" + (" (restored)" if point.restored else ""),
              **{f"test {name}": value for name, value in point.metrics.items()}}
             for point in report.champions]).set_index("champion")
        st.line_chart(history)
    else:
        st.info("No champion has been promoted yet.")
    st.header("KPIs")
    rate = report.automation_rate
    left, middle, right = st.columns(3)
    left.metric("Automation rate", "–" if rate is None else f"{100 * rate:.0f}%",
                help="images the model decided alone / (those + images sent to annotators)")
    overall = report.latency.get("all")
    middle.metric("Latency p50", "–" if overall is None else f"{overall.p50_ms:.0f} ms")
    right.metric("Drift alerts", report.drift_alerts)
    charts = st.columns(2)
    charts[0].subheader("Damage types the model answered")
    charts[0].bar_chart(pd.Series(report.model_answers.images, name="images"))
    charts[1].subheader(f"Latency per image (last {report.latency_days} days)")
    if report.latency:
        charts[1].bar_chart(pd.DataFrame(
            {source: {"p50 ms": stats.p50_ms, "p95 ms": stats.p95_ms}
             for source, stats in report.latency.items()}).T, stack=False)
    else:
        charts[1].info("No answer recorded yet.")
    for note in report.notes:
        st.caption(note)


def figures_table(versions: list[VersionFigures]) -> pd.DataFrame:
    return pd.DataFrame([
        {"version": item.version, "aliases": ", ".join(item.aliases),
         **{name: item.figures.get(name) for name in TEST_FIGURES},
         "dataset": item.dataset_version, "quality gate": item.quality_gate,
         "promoted": item.promoted_at}
        for item in versions]).set_index("version")


def models_page(settings: AppSettings) -> None:
    st.title("Models")
    versions = registered_versions(settings.model_name)
    if not versions:
        st.info(f"Model {settings.model_name!r} has no registered version yet.")
        return
    champion, challenger = with_alias(versions, CHAMPION), with_alias(versions, CHALLENGER)
    columns = st.columns(2)
    for column, alias, version in ((columns[0], CHAMPION, champion),
                                   (columns[1], CHALLENGER, challenger)):
        if version is None:
            column.metric(alias.capitalize(), "none")
            continue
        value = version.figures.get("AP50")
        if alias == CHALLENGER and champion is not None and version.version == champion.version:
            column.metric(f"Challenger: version {version.version}", "the champion",
                          help="the latest challenger passed the quality gate and was promoted")
            continue
        reference = champion.figures.get("AP50") if champion and alias == CHALLENGER else None
        column.metric(f"{alias.capitalize()}: version {version.version}",
                      "–" if value is None else f"test AP50 {value:.3f}",
                      None if value is None or reference is None else f"{value - reference:+.3f}")
    st.subheader("Test figures of every version")
    st.dataframe(figures_table(versions))
    st.subheader("What a rollback would change")
    preview = rollback_preview(versions)
    if preview.blocked:
        st.info(f"No rollback possible: {preview.blocked}.")
        return
    st.markdown(f"Version **{preview.restored.version}** would answer again instead of version "
                f"**{preview.current.version}**. The rollback itself is "
                "`carsdepo rollback` (or the MLflow UI), not this page.")
    st.dataframe(pd.DataFrame(
        [{"test figure": name, "now": now, "after a rollback": after,
          "change": None if now is None or after is None else round(after - now, 4)}
         for name, now, after in preview.changes()]).set_index("test figure"))


def main() -> None:
    st.set_page_config(page_title="carsdepo", layout="wide")
    try:
        settings = AppSettings.from_env()
        connected(str(settings.layout.root))
    except (ValueError, MlflowUnreachableError) as error:
        st.error(str(error))
        return
    pages = [
        st.Page(lambda: check_page(settings), title="Check photos", url_path="check",
                default=True),
        st.Page(lambda: monitoring_page(settings), title="Monitoring", url_path="monitoring"),
        st.Page(lambda: models_page(settings), title="Models", url_path="models"),
    ]
    st.navigation(pages).run()


main()
