"""The prediction tests' registered champion (a tiny detector trained once per package),
shared here so that monitoring embeds photos with a real champion's backbone."""

from carsdepo_assets_tests.prediction.conftest import (  # noqa: F401 - fixtures, by name
    champion,
    empty_store,
    panels,
    registry_template,
)
