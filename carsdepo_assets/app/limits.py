"""What one submission on the page may hold: the limits REST and ingestion apply to a photo,
and a number of photos, so the page cannot be used to exhaust the machine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from carsdepo_assets.images.validate import ImagePolicy

MIB = 2**20


@dataclass(frozen=True)
class PhotoLimits:
    """What one submission may hold: the image policy REST and ingestion apply (file size,
    pixels, formats) and a number of photos, so the page cannot exhaust the machine."""

    policy: ImagePolicy = field(default_factory=ImagePolicy)
    max_photos: int = 16

    def __post_init__(self) -> None:
        if self.max_photos < 1:
            raise ValueError(f"PhotoLimits.max_photos must be at least 1, got {self.max_photos}")

    @property
    def upload_megabytes(self) -> int:
        """The per-file upload limit for the web server, in whole MiB (rounded up)."""
        return math.ceil(self.policy.max_file_bytes / MIB)
