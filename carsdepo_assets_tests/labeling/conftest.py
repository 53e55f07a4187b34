"""Labeling test helpers. Until the top conftest lists ``carsdepo_assets_tests.fixtures.
label_studio`` in ``pytest_plugins``, its fixtures are imported here."""

from carsdepo_assets_tests.fixtures.label_studio import (  # noqa: F401
    label_studio,
    label_studio_server,
)
