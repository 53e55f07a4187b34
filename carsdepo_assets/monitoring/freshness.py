"""Freshness of the champion model: is it stale while newer annotations wait to be learnt?

A champion is stale when it is older than ``max_age_days`` *and* annotations newer than it
exist: age alone is no reason to retrain when nothing new has been labelled since. Without a
champion, annotations waiting to be learnt make the platform stale too.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def model_staleness(
    champion_created_at: datetime | None,
    newest_annotation_at: datetime | None,
    now: datetime,
    max_age_days: float,
) -> tuple[bool, str]:
    """``(stale, reason)``; every datetime must be timezone-aware (UTC recommended)."""
    if max_age_days <= 0:
        raise ValueError(f"max_age_days must be positive, got {max_age_days}")
    for name, moment in (("champion_created_at", champion_created_at),
                         ("newest_annotation_at", newest_annotation_at), ("now", now)):
        if moment is not None and moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")

    if champion_created_at is None:
        if newest_annotation_at is None:
            return False, "no champion model and no annotations yet: nothing to train on"
        return True, (f"no champion model yet, and annotations exist "
                      f"(newest {newest_annotation_at.isoformat()})")
    age = now - champion_created_at
    age_text = f"champion is {_days(age)} old (limit {max_age_days:g} days)"
    if age <= timedelta(days=max_age_days):
        return False, age_text
    if newest_annotation_at is None or newest_annotation_at <= champion_created_at:
        return False, f"{age_text}, but no annotation is newer than it"
    return True, (f"{age_text} and annotations up to {newest_annotation_at.isoformat()} "
                  f"are newer than it")


def _days(age: timedelta) -> str:
    return f"{age.total_seconds() / 86400:.1f} days"
