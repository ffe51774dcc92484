"""UTC calendar periods for budgets: a label for the current one and when it ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["PERIODS", "period_bounds"]

PERIODS = ("minute", "hour", "day", "month")


def period_bounds(period: str, now: float) -> tuple[str, float]:
    """(label, end as unix seconds) of the UTC calendar ``period`` holding ``now``.

    >>> period_bounds("month", 1_700_000_000.0)
    ('2023-11', 1701388800.0)
    """
    t = datetime.fromtimestamp(now, UTC)
    if period == "minute":
        start = t.replace(second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H:%M"), (start + timedelta(minutes=1)).timestamp()
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H"), (start + timedelta(hours=1)).timestamp()
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    if period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start.strftime("%Y-%m"), end.timestamp()
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
