"""Predictions for the business: the detector as the MLflow model the registry holds and
serves (``pyfunc``), batch predictions, ``carsdepo predict``, the REST server's records, the
inference log, and the KPIs computed from the platform's own records.

No Dagster here (the assets in ``carsdepo_assets.assets.inference`` and ``.kpis`` are thin).
``prediction`` builds on ``detection``; ``detection`` never imports ``prediction``.
"""
