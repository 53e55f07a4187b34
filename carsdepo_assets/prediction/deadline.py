"""The deadline of the request being answered, so that the work of a timed-out request stops.

A web server's timeout that only stops waiting leaves the model working (and recording answers
nobody receives) while the next clients queue behind it. The server's request guard sets the
deadline in a context variable; the model's thread inherits it (``asyncio.to_thread`` copies the
context) and checks it between images, before the next one starts.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("carsdepo_request_deadline", default=None)


class DeadlinePassed(Exception):
    """The request's time is up: its remaining work is not done and nothing is recorded."""


def set_deadline(seconds: float) -> None:
    """Give the current context (one request) ``seconds`` from now (``time.monotonic``)."""
    _deadline.set(time.monotonic() + seconds)


def current_deadline() -> float | None:
    """The ``time.monotonic`` instant the current request must be answered by, or None."""
    return _deadline.get()


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never below 0), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def check_deadline(deadline: float | None, timeout_s: float | None = None) -> None:
    """Raise DeadlinePassed once ``deadline`` (a ``time.monotonic`` instant) is behind us."""
    if deadline is not None and time.monotonic() >= deadline:
        after = f" after {timeout_s:g} s" if timeout_s is not None else ""
        raise DeadlinePassed(f"request timed out{after}: its remaining images were not "
                             "answered (carsdepo serve --timeout changes the limit)")
