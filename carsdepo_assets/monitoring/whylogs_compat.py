"""The one door to whylogs: every carsdepo module imports whylogs names from here.

whylogs 1.6.4 is the last release and predates NumPy 2. It refers to ``np.unicode_`` (removed
in NumPy 2.0; it was always an alias of ``np.str_``) when it decides whether a logged value is a
string, so logging a row with a string value raises ``AttributeError`` under NumPy 2. Restoring
the alias before whylogs is imported is the whole fix; nothing else in whylogs needs it.

whylogs also sends anonymous usage statistics over HTTP unless ``WHYLOGS_NO_ANALYTICS`` is set;
a platform that may run offline (and must not phone home) opts out here, before the import.

The drift helpers live in ``whylogs.viz``, whose package import pulls in IPython and pybars3
(installed as plain dependencies, without whylogs' ``[viz]`` extra).
"""

from __future__ import annotations

import os

import numpy as np

if "unicode_" not in np.__dict__:
    np.unicode_ = np.str_  # NumPy 2 removed the alias; whylogs.core.datatypes still uses it.
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import whylogs  # noqa: E402
from whylogs.core import DatasetProfile, DatasetProfileView  # noqa: E402
from whylogs.viz.drift.column_drift_algorithms import KS, calculate_drift_scores  # noqa: E402
from whylogs.viz.drift.configs import DriftThresholds, KSTestConfig  # noqa: E402

__all__ = [
    "DatasetProfile",
    "DatasetProfileView",
    "DriftThresholds",
    "KS",
    "KSTestConfig",
    "calculate_drift_scores",
    "whylogs",
]
