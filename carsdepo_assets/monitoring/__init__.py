"""Monitoring domain (no Dagster): what incoming photos look like and whether that changed.

- ``features``: per-image features (and model-output features of predictions)
- ``embedding``: content features: backbone embeddings projected on a PCA of the reference
- ``profiles``: whylogs profiles of feature rows, streamed in chunks; stored as whylogs binary
- ``drift``: per-feature KS tests between a reference and a batch profile, one deviation score,
  and which signal moved (light, content, outputs)
- ``decision``: the retrain-or-experiment rule applied to a drift report
- ``freshness``: is the champion model stale while newer annotations wait?
- ``whylogs_compat``: the one place whylogs is imported (NumPy 2 shim, telemetry off)
"""
