"""What can be known of a photo file before any model is loaded: ``carsdepo predict`` checks its
arguments first, so a missing or unreadable file is named in well under a second instead of
after the model's load.

Light on purpose (no torch, MLflow or pandas): the command imports this before anything heavy.
The reasons read as the answer for such a file would (``pyfunc``'s ``path`` column).
"""

from __future__ import annotations

import os
from pathlib import Path

from carsdepo_assets.images.files import NotARegularFile, open_regular
from carsdepo_assets.images.validate import ImagePolicy, file_too_big_reason


def unusable_file_reason(path: str, policy: ImagePolicy) -> str | None:
    """Why the file ``path`` cannot be answered for (missing, unreadable, not a regular file,
    empty, over the size limit), found without reading its bytes; None when it may be."""
    try:
        fd = open_regular(Path(path))  # links, pipes and devices are refused unread
    except NotARegularFile as refused:
        return f"{path}: {refused.reason}"
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size == 0:
        return "zero bytes: the file is empty"
    if size > policy.max_file_bytes:
        return f"{path}: {file_too_big_reason(size, policy)}"
    return None
