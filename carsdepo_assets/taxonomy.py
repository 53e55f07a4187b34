"""The damage classes carsdepo detects, defined once for every stage.

COCO category ids are fixed (1 = scratch, 2 = dent) so that datasets, models and reports made
at different times agree. An image with neither class is answered with ``NONE_ANSWER``.
"""

from __future__ import annotations

SCRATCH = "scratch"
DENT = "dent"
CLASS_NAMES: tuple[str, ...] = (SCRATCH, DENT)
NONE_ANSWER = "None"

CATEGORY_ID_BY_NAME: dict[str, int] = {name: index + 1 for index, name in enumerate(CLASS_NAMES)}
CLASS_NAME_BY_ID: dict[int, str] = {value: key for key, value in CATEGORY_ID_BY_NAME.items()}


def coco_categories() -> list[dict]:
    """The ``categories`` list every carsdepo COCO file carries."""
    return [
        {"id": CATEGORY_ID_BY_NAME[name], "name": name, "supercategory": "damage"}
        for name in CLASS_NAMES
    ]
