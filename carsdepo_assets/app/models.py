"""What the models page shows: each registered version with its test figures and aliases, and
what a rollback would change, without doing it (the rollback stays ``carsdepo rollback``).

Reads the MLflow registry; MLflow must point at the store first
(``detection.champion.configure_mlflow``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from carsdepo_assets.detection.champion import (
    CHALLENGER,
    CHAMPION,
    GATE_TAG,
    PREVIOUS_CHAMPION_TAG,
    PROMOTED_AT_TAG,
)

# The test figures evaluation_report logs as test_<name> in the version's run, in the order
# the page lists them.
TEST_FIGURES = ("AP50", "AP50_lower_bound", "AP", "none_accuracy", "precision", "recall", "f1",
                "ms_per_image")
DATASET_TAG = "carsdepo.dataset_version"


@dataclass(frozen=True)
class VersionFigures:
    """One registered version: its aliases, test figures and where it came from."""

    version: str
    aliases: tuple[str, ...]
    figures: dict[str, float]
    dataset_version: str | None
    quality_gate: str | None
    promoted_at: str | None
    previous_champion: str | None


@dataclass(frozen=True)
class RollbackPreview:
    """What ``carsdepo rollback`` would do now: which version would answer instead of which,
    and how each test figure would change; ``blocked`` says why there is nothing to undo."""

    current: VersionFigures | None
    restored: VersionFigures | None
    blocked: str | None

    def changes(self) -> list[tuple[str, float | None, float | None]]:
        """(figure, now, after the rollback) for each test figure either version has."""
        if self.current is None or self.restored is None:
            return []
        return [(name, self.current.figures.get(name), self.restored.figures.get(name))
                for name in TEST_FIGURES
                if name in self.current.figures or name in self.restored.figures]


def registered_versions(model_name: str) -> list[VersionFigures]:
    """Every version of ``model_name``, newest first (none when it is not registered)."""
    client = MlflowClient()
    found = client.search_model_versions(f"name = '{model_name}'")
    aliases = _aliases_by_version(client, model_name) if found else {}
    versions = [_figures(client, version, aliases.get(str(version.version), ()))
                for version in found]
    return sorted(versions, key=lambda item: int(item.version), reverse=True)


def with_alias(versions: list[VersionFigures], alias: str) -> VersionFigures | None:
    return next((item for item in versions if alias in item.aliases), None)


def rollback_preview(versions: list[VersionFigures]) -> RollbackPreview:
    """What a rollback would change among ``versions`` (``registered_versions``)."""
    current = with_alias(versions, CHAMPION)
    if current is None:
        return RollbackPreview(None, None, "there is no champion: nothing to roll back")
    if not current.previous_champion:
        return RollbackPreview(current, None, f"version {current.version} did not replace an "
                               "earlier champion, so there is no version to roll back to")
    restored = next((item for item in versions if item.version == current.previous_champion),
                    None)
    if restored is None:
        return RollbackPreview(current, None, f"version {current.previous_champion}, which "
                               f"version {current.version} replaced, is no longer registered")
    return RollbackPreview(current, restored, None)


def _aliases_by_version(client: MlflowClient, model_name: str) -> dict[str, tuple[str, ...]]:
    by_version: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(model_name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    order = {CHAMPION: 0, CHALLENGER: 1}
    return {version: tuple(sorted(names, key=lambda name: (order.get(name, 2), name)))
            for version, names in by_version.items()}


def _figures(client: MlflowClient, version, aliases: tuple[str, ...]) -> VersionFigures:
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    tags = version.tags
    return VersionFigures(
        version=str(version.version),
        aliases=aliases,
        figures={name: round(float(metrics[f"test_{name}"]), 4) for name in TEST_FIGURES
                 if f"test_{name}" in metrics},
        dataset_version=tags.get(DATASET_TAG),
        quality_gate=tags.get(GATE_TAG),
        promoted_at=tags.get(PROMOTED_AT_TAG),
        previous_champion=tags.get(PREVIOUS_CHAMPION_TAG),
    )
