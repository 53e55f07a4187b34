"""What a detector answers for one image: damage boxes, or the answer "None"."""

from __future__ import annotations

from dataclasses import dataclass

from carsdepo_assets.taxonomy import NONE_ANSWER


@dataclass(frozen=True)
class Detection:
    label: str  # one of taxonomy.CLASS_NAMES
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels

    def mirrored(self, width: float) -> Detection:
        """This detection as found in the left-right mirror of an image ``width`` pixels wide
        (and back: mirroring twice gives the detection again)."""
        x1, y1, x2, y2 = self.box
        return Detection(self.label, self.score, (width - x2, y1, width - x1, y2))

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "score": round(float(self.score), 4),
            "box": [round(float(v), 1) for v in self.box],
        }


def damage_answer(detections: list[Detection], threshold: float) -> str | list[dict]:
    """The public answer for an image: ``"None"`` or the detections at/above ``threshold``."""
    kept = [d.to_dict() for d in detections if d.score >= threshold]
    return kept if kept else NONE_ANSWER
