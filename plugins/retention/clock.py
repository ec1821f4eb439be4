"""When is a record due? Cutoffs computed in business time, compared in UTC.

Business dates live in Europe/Copenhagen; storage is UTC. Every rule here errs on
the side of keeping: a record is due only when its whole retention period has
passed, even across month ends (31 March minus one month is 28/29 February),
leap days and daylight-saving changes (a local time that does not exist or exists
twice resolves to the *earlier* instant).

What cannot be computed (a naive ``now``, a date beyond the calendar's years 1 to 9999) raises
``ClockError``, a terminal error: retrying gives the same answer.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from retention.errors import ClockError
from retention.policy import Period, Retention

BUSINESS_TZ = ZoneInfo("Europe/Copenhagen")


@dataclass(frozen=True)
class Cutoff:
    """Records whose anchor is before this bound are due.

    For timestamp columns: ``anchor <= instant`` when ``inclusive`` else ``anchor < instant``.
    For date columns: ``anchor < date_bound`` (a date counts from the end of that day).
    """

    instant: datetime
    inclusive: bool
    date_bound: date

    def admits(self, anchor: datetime | date | None) -> bool:
        """Whether one anchor value is due under this cutoff (the same rule the SQL applies)."""
        if anchor is None:
            return False
        if isinstance(anchor, datetime):
            if anchor.tzinfo is None:
                anchor = anchor.replace(tzinfo=UTC)
            return anchor <= self.instant if self.inclusive else anchor < self.instant
        return anchor < self.date_bound


def shift(naive: datetime, period: Period, sign: int) -> datetime:
    """Add (sign=+1) or subtract (sign=-1) a calendar period to a naive local datetime.

    Years and months move the calendar month and clamp the day to the month's length;
    days move whole calendar days (wall-clock time is kept). Raises ``ClockError`` when the
    result lies outside the calendar.
    """
    months = naive.year * 12 + (naive.month - 1) + sign * (period.years * 12 + period.months)
    year, month = divmod(months, 12)
    with _in_calendar(f"shifting a date by {'-' if sign < 0 else ''}{period}"):
        day = min(naive.day, calendar.monthrange(year, month + 1)[1])
        moved = naive.replace(year=year, month=month + 1, day=day)
        return moved + timedelta(days=sign * period.days)


def to_utc_earliest(naive_local: datetime) -> datetime:
    """The earliest UTC instant a Copenhagen wall-clock time can mean (gaps and folds resolve early)."""
    with _in_calendar("converting a Copenhagen time to UTC"):
        candidates = [naive_local.replace(tzinfo=BUSINESS_TZ, fold=f).astimezone(UTC) for f in (0, 1)]
    return min(candidates)


def local_naive(now: datetime) -> datetime:
    """``now`` as a Copenhagen wall-clock time without a zone; ``ClockError`` if ``now`` has no zone."""
    if now.tzinfo is None:
        raise ClockError("'now' must be timezone-aware")
    with _in_calendar("converting a time to Copenhagen time"):
        return now.astimezone(BUSINESS_TZ).replace(tzinfo=None)


def cutoff_for(retention: Retention, now: datetime) -> Cutoff:
    """The cutoff of a retention rule at ``now``."""
    period = retention.parsed_period
    now_local = local_naive(now)
    if retention.counts_from == "event":
        bound_local = shift(now_local, period, -1)
        return Cutoff(instant=to_utc_earliest(bound_local), inclusive=True, date_bound=bound_local.date())
    boundary = latest_fy_boundary(now_local, period, retention.fy_start)
    return Cutoff(instant=to_utc_earliest(boundary), inclusive=False, date_bound=boundary.date())


def latest_fy_boundary(now_local: datetime, period: Period, fy_start: tuple[int, int]) -> datetime:
    """The latest financial-year start B such that B + period <= now (local midnight).

    A record dated in a financial year that ended at or before B has served its period.
    """
    month, day = fy_start
    year = now_local.year
    candidate = _fy_start(year, month, day)
    while candidate > now_local or shift(candidate, period, +1) > now_local:
        year -= 1
        candidate = _fy_start(year, month, day)
    return candidate


def _fy_start(year: int, month: int, day: int) -> datetime:
    with _in_calendar("finding a financial year's start"):
        return datetime(year, month, min(day, calendar.monthrange(year, month)[1]))


def until_for(retention: Retention, anchor: datetime | date) -> date:
    """The local date from which a record with this anchor is due (for receipts: 'kept until')."""
    period = retention.parsed_period
    if isinstance(anchor, datetime):
        # a timestamp without time zone is read in the zone its values are written in (UTC if none)
        zone = ZoneInfo(retention.anchor_time_zone) if retention.anchor_time_zone else UTC
        local = local_naive(anchor if anchor.tzinfo else anchor.replace(tzinfo=zone))
        day_of = local.date()
    else:
        day_of = anchor
        with _in_calendar("finding the day after an anchor date"):
            local = datetime(anchor.year, anchor.month, anchor.day) + timedelta(days=1)
    if retention.counts_from == "end_of_financial_year":
        month, day = retention.fy_start
        start = _fy_start(day_of.year, month, day)
        if start.date() <= day_of:
            start = _fy_start(day_of.year + 1, month, day)
        return shift(start, period, +1).date()
    return shift(local, period, +1).date()


@contextmanager
def _in_calendar(doing: str) -> Iterator[None]:
    """Turn the ``ValueError``/``OverflowError`` of a date beyond years 1-9999 into ``ClockError``.

    The message names the step, never the date (an anchor may be personal data).
    """
    try:
        yield
    except (ValueError, OverflowError) as e:
        raise ClockError(f"{doing} leaves the calendar (years 1 to 9999)") from e
