"""Monitoring domain (no Dagster): what incoming photos look like and whether that changed.

- ``features``: per-image features (and model-output features of predictions)
- ``profiles``: whylogs profiles of feature rows, streamed in chunks; stored as whylogs binary
- ``drift``: per-feature KS tests between a reference and a batch profile, one deviation score
- ``decision``: the retrain-or-experiment rule applied to a drift report
- ``freshness``: is the champion model stale while newer annotations wait?
- ``whylogs_compat``: the one place whylogs is imported (NumPy 2 shim, telemetry off)
"""
