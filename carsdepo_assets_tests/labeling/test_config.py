"""The labeling config: one source of truth for the project and the checked-in XML."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from carsdepo_assets.labeling.config import NO_DAMAGE_CHOICE, labeling_config
from carsdepo_assets.state import PROJECT_ROOT
from carsdepo_assets.taxonomy import CLASS_NAMES

CHECKED_IN = PROJECT_ROOT / "label_studio" / "labeling_config.xml"


def test_checked_in_xml_is_the_config_projects_are_created_with():
    assert CHECKED_IN.read_text() == labeling_config()


def test_config_offers_a_box_per_class_and_an_explicit_no_damage_choice():
    view = ElementTree.fromstring(labeling_config())
    rectangles = view.find("RectangleLabels")
    assert [label.get("value") for label in rectangles] == list(CLASS_NAMES)
    assert rectangles.get("canRotate") == "false"
    assert [choice.get("value") for choice in view.find("Choices")] == [NO_DAMAGE_CHOICE]
    assert view.find("Image").get("value") == "$image"
