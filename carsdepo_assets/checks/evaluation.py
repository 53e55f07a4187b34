"""The quality gate: a blocking check on evaluation_report that guards promotion."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from carsdepo_assets.assets.evaluation import evaluation_report


@asset_check(
    asset=evaluation_report,
    blocking=True,
    required_resource_keys={"model_registry"},
    description=(
        "The challenger reaches the configured minimums (model_registry resource) and does not "
        "fall below the champion by more than the tolerance; deployed_model waits on it."
    ),
)
def quality_gate(
    context: AssetCheckExecutionContext, evaluation_report: dict
) -> AssetCheckResult:
    models = evaluation_report["models"]
    champion = models.get("champion")
    decision = context.resources.model_registry.judge(models)
    return AssetCheckResult(
        passed=decision.passed,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(decision.reasons),
        metadata={
            "challenger_version": models["challenger"]["version"],
            "champion_version": champion["version"] if champion else "none",
            "reasons": "\n".join(f"- {reason}" for reason in decision.reasons),
        },
    )
