"""What one submission on the page may cost: the limits ``carsdepo serve`` applies to a
request (photos, pixels their headers declare, the working side a large photo is read at) and
ingestion's image policy (file size, pixels, formats), so the page cannot be used to exhaust
the machine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from carsdepo_assets.images.validate import ImagePolicy
from carsdepo_assets.prediction.limits import MIB, ServingLimits


@dataclass(frozen=True)
class PhotoLimits:
    """A submission is a request: at most ``request.max_rows`` photos, declaring at most
    ``request.max_request_pixels`` pixels together; each photo within ``policy``."""

    policy: ImagePolicy = field(default_factory=ImagePolicy)
    request: ServingLimits = field(default_factory=ServingLimits)

    @property
    def max_photos(self) -> int:
        return self.request.max_rows

    @property
    def upload_megabytes(self) -> int:
        """The per-file upload limit for the web server, in whole MiB (rounded up)."""
        return math.ceil(self.policy.max_file_bytes / MIB)
