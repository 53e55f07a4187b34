"""The Label Studio labeling interface for carsdepo, and the names that tie results to it.

Annotators draw ``scratch`` and ``dent`` rectangles, or state "no damage" explicitly with an
image-level choice: an image without boxes is a negative only when someone said so. The same
XML is checked in as ``label_studio/labeling_config.xml`` for people who set a project up by
hand; a test keeps the two identical.
"""

from __future__ import annotations

from carsdepo_assets.taxonomy import CLASS_NAMES, DENT, SCRATCH

IMAGE_NAME = "image"  # the <Image> tag, and the task data key holding the image URL
BOXES_NAME = "damage"  # the <RectangleLabels> control
VERDICT_NAME = "verdict"  # the image-level <Choices> control
NO_DAMAGE_CHOICE = "no damage"
RECTANGLE_TYPE = "rectanglelabels"
CHOICES_TYPE = "choices"

_LABEL_BACKGROUNDS = {SCRATCH: "#ff40a0", DENT: "#00c8ff"}  # the colours of carsdepo_assets.visual


def labeling_config() -> str:
    """The project's labeling config XML (one label per class of the taxonomy)."""
    labels = "\n".join(
        f'    <Label value="{name}" background="{_LABEL_BACKGROUNDS[name]}"/>'
        for name in CLASS_NAMES
    )
    return f"""<View>
  <Header value="Draw a box around every scratch and dent. No damage at all? Say so below."/>
  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true" zoomControl="true"/>
  <RectangleLabels name="{BOXES_NAME}" toName="{IMAGE_NAME}" canRotate="false">
{labels}
  </RectangleLabels>
  <Choices name="{VERDICT_NAME}" toName="{IMAGE_NAME}" choice="single" showInline="true">
    <Choice value="{NO_DAMAGE_CHOICE}"/>
  </Choices>
</View>
"""
