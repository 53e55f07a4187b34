"""What one prediction request may cost: the budget ``carsdepo serve`` enforces per request, and
the bound on the work of one photo that every answer path applies.

A small body can carry a huge bill (a one-colour 7000x7000 PNG is 160 KB, 147 MB decoded and
some 300 tiles of sliced prediction), so a request is measured three ways before any pixel is
decoded: its body's bytes, its rows, and the pixels its images' headers declare. Each refusal
names the limit and the ``carsdepo serve`` option that changes it (``refusal``). A photo larger
than ``max_working_side`` on its long side is read at a reduced scale, so that one photo costs
a bounded number of tiles whatever its resolution.

The limits travel from ``carsdepo serve`` to the server's worker processes as JSON in one
environment variable (``to_environment`` / ``from_environment``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

LIMITS_ENV = "CARSDEPO_SERVING_LIMITS"
MIB = 1024 * 1024

# The `carsdepo serve` option that sets each limit, as a refusal names it.
SERVE_OPTIONS = {
    "max_body_bytes": "--max-body-mb",
    "max_rows": "--max-rows",
    "max_request_pixels": "--max-request-megapixels",
    "max_working_side": "--max-working-side",
    "timeout_s": "--timeout",
    "allowed_path_roots": "--allow-paths-under",
}


class OverLimit(ValueError):
    """A request refused as a whole for a limit; ``status`` is the HTTP status it gets."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServingLimits:
    """The per-request budget of the REST server, and the per-photo bound on sliced prediction.

    ``max_body_bytes`` lets one photo at ingestion's file limit (50 MiB) through in base64;
    ``max_request_pixels`` is two photos at ingestion's pixel limit (50 MP), or sixteen 6 MP
    photos; ``max_working_side`` is above the working side of every shipped preset (1280), so
    that photos of ordinary size are answered exactly as before. ``allowed_path_roots`` empty:
    the ``path`` column is refused (only the ``image`` column, the bytes themselves, is read).
    """

    max_body_bytes: int = 72 * MIB
    max_rows: int = 64
    max_request_pixels: int = 100_000_000
    max_working_side: int = 2048
    timeout_s: float = 60.0
    allowed_path_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_path_roots", tuple(self.allowed_path_roots))
        for name in ("max_body_bytes", "max_rows", "max_request_pixels", "max_working_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a whole number of at least 1 "
                                 f"({SERVE_OPTIONS[name]})")
        if not self.timeout_s > 0:  # NaN fails too
            raise ValueError(f"timeout_s={self.timeout_s!r}: must be above 0 seconds (--timeout)")

    def refusal(self, name: str, found: str, status: int = 400) -> OverLimit:
        """The error for a request over limit ``name``: what it had, the limit, the option."""
        limit = getattr(self, name)
        shown = f"{limit:,}" if isinstance(limit, int) else f"{limit:g}"
        return OverLimit(f"{found}, over the limit of {shown} {_UNITS[name]} "
                         f"(carsdepo serve {SERVE_OPTIONS[name]} changes it)", status)

    def to_environment(self) -> dict[str, str]:
        return {LIMITS_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServingLimits | None:
        """The limits ``carsdepo serve`` set, or None (a model not served by carsdepo)."""
        text = (os.environ if environ is None else environ).get(LIMITS_ENV)
        if not text:
            return None
        payload = json.loads(text)
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in known})


_UNITS = {
    "max_body_bytes": "bytes",
    "max_rows": "rows",
    "max_request_pixels": "decoded pixels",
    "max_working_side": "pixels",
    "timeout_s": "seconds",
}
