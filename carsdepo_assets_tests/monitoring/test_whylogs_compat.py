"""whylogs 1.6.4 predates NumPy 2; the compatibility module must make it usable anyway."""

from __future__ import annotations

import numpy as np

from carsdepo_assets.monitoring.whylogs_compat import DatasetProfileView, whylogs


def test_whylogs_logs_string_values_under_numpy_2() -> None:
    """Logging a string is the path that touches the removed ``np.unicode_``."""
    assert int(np.__version__.split(".")[0]) >= 2
    view = whylogs.log(row={"paint": "silver", "brightness": 0.5}).view()
    assert isinstance(view, DatasetProfileView)
    types = view.get_column("paint").get_metric("types").to_summary_dict()
    assert types["string"] == 1


def test_whylogs_usage_statistics_are_switched_off() -> None:
    """The platform must not phone home (and must not hang at exit when offline)."""
    from whylogs.api import usage_stats

    assert usage_stats._TELEMETRY_DISABLED
