"""Predictions for the business: batch predictions, ``carsdepo predict``, the REST server's
records, the inference log, and the KPIs computed from the platform's own records.

No Dagster here (the assets in ``carsdepo_assets.assets.inference`` and ``.kpis`` are thin), and
no imports in this file: ``detection.pyfunc`` imports ``prediction.inference_log``, which must
not pull in modules that import ``detection.pyfunc`` back.
"""
