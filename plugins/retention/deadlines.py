"""Legal time limits in Danish business time: the third-party notice and the answer to a request.

Two promises are watched (``retention.watch``):

- the privacy policy: data about a customer obtained from a third party is announced to the
  customer "senest 10 dage efter" (at the latest 10 days after it was received; GDPR Art. 14);
- GDPR Art. 12(3): a privacy request is answered within one month of receipt, extendable by two
  further months where necessary, if the data subject is told of the extension, with the
  reasons, within the first month.

Periods are counted as EU Regulation 1182/71 (the rules for periods, dates and time limits in EU
law) counts them, in Europe/Copenhagen time:

- the day of the event (receipt) is not counted (Art. 3(1));
- a period in days starts at the beginning of the next day and ends at the end of its last day:
  received on day 0, ``P10D`` ends at the end of day 10 (Art. 3(2)(b));
- a period in weeks, months or years ends at the end of the day in the last week, month or year
  that has the same name or number as the event day; if that month has no such day, at the end
  of its last day: received 31 January, ``P1M`` ends at the end of 28 (29) February; 31 March ends
  30 April; 30 April ends 30 May (Art. 3(2)(c));
- Saturdays, Sundays and public holidays count (Art. 3(3)), but a period whose last day is one of
  them ends at the end of the next working day (Art. 3(4)).

A deadline is the end of the last day: the next day at 00:00 in Copenhagen, an aware datetime.
Midnight exists exactly once on every Copenhagen day (the clocks change at 02:00 and 03:00),
so the day a summer-time change falls on is 23 hours long and the winter-time day 25 hours,
and the deadline is still that local midnight.

Danish public holidays (helligdage) are computed per year, Easter by the Gregorian computus:
Nytårsdag, Skærtorsdag, Langfredag, Påskedag, 2. påskedag, Kristi himmelfartsdag, Pinsedag,
2. pinsedag, Juledag and 2. juledag, and Store bededag (the fourth Friday after Easter) up to
and including 2023 (abolished from 2024 by lov nr. 229 of 28 February 2023). Grundlovsdag
(5 June) and 24 and 31 December are no public holidays by law, although many offices close:
``COMMON_CLOSING_DAYS`` names them, and every function takes an optional ``company_closed`` set
(recurring ``(month, day)`` pairs or single dates) that is treated like a holiday. The default
is empty, the legal reading: a closing day added there moves a deadline later than the law
allows, so add one only where the agency's own promise says so.

Nothing here reads a database; ``retention.watch`` applies these rules to a table.
What cannot be computed (a naive datetime, a date beyond the years 1 to 9999) raises
``ClockError``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from retention.errors import ClockError
from retention.locations import Identifier, Strict

BUSINESS_TZ = ZoneInfo("Europe/Copenhagen")
"""Business time: every period is counted in Copenhagen calendar days."""

STORE_BEDEDAG_LAST_YEAR = 2023
"""Store bededag is a public holiday up to and including this year (abolished from 2024)."""

ClosedDay = tuple[int, int] | date
"""A day the company is closed: every year on ``(month, day)``, or one ``date``."""

COMMON_CLOSING_DAYS: frozenset[tuple[int, int]] = frozenset({(6, 5), (12, 24), (12, 31)})
"""Grundlovsdag, juleaftensdag and nytårsaftensdag: closed in many offices, not public holidays by
law. Pass them as ``company_closed`` only if the agency's own promise counts them as closed."""

Status = Literal["open", "due_soon", "overdue"]
"""An open item's state at a moment: within time, within ``warn_before`` days of its last day, or late."""

_EASTER_HOLIDAYS = (
    (-3, "Skærtorsdag"),
    (-2, "Langfredag"),
    (0, "Påskedag"),
    (1, "2. påskedag"),
    (39, "Kristi himmelfartsdag"),
    (49, "Pinsedag"),
    (50, "2. pinsedag"),
)
_STORE_BEDEDAG = 26
"""Days after Easter Sunday: the fourth Friday after Easter."""
_MAX_ROLL = 400
"""More consecutive closed days than this means the closing set closes everything."""


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` by the Gregorian computus (the anonymous Meeus/Jones/Butcher algorithm)."""
    if not 1 <= year <= 9999:
        raise ClockError("a year must lie within 1 to 9999")
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    weekday = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday) // 451
    month, day = divmod(h + weekday - 7 * m + 114, 31)
    return date(year, month, day + 1)


def danish_public_holidays(year: int) -> dict[date, str]:
    """The Danish public holidays (helligdage) of ``year``, by date, in date order, with their names."""
    easter = easter_sunday(year)
    days = {date(year, 1, 1): "Nytårsdag"}
    for offset, name in _EASTER_HOLIDAYS:
        days[easter + timedelta(days=offset)] = name
    if year <= STORE_BEDEDAG_LAST_YEAR:
        days[easter + timedelta(days=_STORE_BEDEDAG)] = "Store bededag"
    days[date(year, 12, 25)] = "Juledag"
    days[date(year, 12, 26)] = "2. juledag"
    return dict(sorted(days.items()))


@lru_cache(maxsize=64)
def _holidays(year: int) -> frozenset[date]:
    return frozenset(danish_public_holidays(year))


def is_working_day(day: date, company_closed: Collection[ClosedDay] = ()) -> bool:
    """Whether ``day`` is a working day: Monday to Friday, no public holiday, not in ``company_closed``."""
    if day.weekday() >= 5 or day in _holidays(day.year):
        return False
    return not company_closed or ((day.month, day.day) not in company_closed and day not in company_closed)


def next_working_day(day: date, company_closed: Collection[ClosedDay] = ()) -> date:
    """``day`` itself if it is a working day, otherwise the first working day after it."""
    closed = frozenset(company_closed)
    with _in_calendar("finding the next working day"):
        for _ in range(_MAX_ROLL):
            if is_working_day(day, closed):
                return day
            day += timedelta(days=1)
    raise ClockError("company_closed leaves no working day within a year")


_SPAN = re.compile(r"^P([1-9][0-9]{0,3})([DWMY])$")
_SPAN_LIMIT = {"D": 3660, "W": 520, "M": 120, "Y": 10}


@dataclass(frozen=True)
class Span:
    """The length of a legal period: whole months (years are 12 months) and days (weeks are 7 days)."""

    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Span:
        """Parse one ISO-8601 unit: ``P10D``, ``P2W``, ``P1M`` or ``P1Y`` (at most 10 years).

        Mixed units (``P1M10D``) are refused: Regulation 1182/71 counts a period in one unit.
        """
        m = _SPAN.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"{text!r} is not a period in one unit such as P10D, P2W, P1M or P1Y")
        n, unit = int(m.group(1)), m.group(2)
        if n > _SPAN_LIMIT[unit]:
            raise ValueError(f"{text!r}: a period must be at most 10 years")
        if unit in "DW":
            return cls(days=n * (7 if unit == "W" else 1))
        return cls(months=n * (12 if unit == "Y" else 1))

    def __add__(self, other: Span) -> Span:
        return Span(self.months + other.months, self.days + other.days)

    def __str__(self) -> str:
        return "P" + "".join(f"{n}{u}" for n, u in ((self.months, "M"), (self.days, "D")) if n)


def event_day(instant: datetime) -> date:
    """The Copenhagen calendar day of an aware instant (the day an event happened)."""
    if not isinstance(instant, datetime) or instant.utcoffset() is None:
        raise ClockError("an event time must be a timezone-aware datetime")
    with _in_calendar("converting a time to Copenhagen time"):
        return instant.astimezone(BUSINESS_TZ).date()


def period_end(event: date, span: Span, company_closed: Collection[ClosedDay] = ()) -> date:
    """The last day of a period of ``span`` that runs from the day ``event`` (Regulation 1182/71).

    Months keep the event's day number, or take the month's last day where it has no such day;
    days are added after the months. A last day that is not a working day moves to the next one.
    """
    with _in_calendar("adding a period to a date"):
        months = event.year * 12 + event.month - 1 + span.months
        year, month0 = divmod(months, 12)
        day = min(event.day, calendar.monthrange(year, month0 + 1)[1])
        raw = date(year, month0 + 1, day) + timedelta(days=span.days)
    return next_working_day(raw, company_closed)


def end_of_day(day: date) -> datetime:
    """The end of ``day`` in Copenhagen: the next day at 00:00, an aware datetime."""
    with _in_calendar("finding the end of a day"):
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=BUSINESS_TZ)


def deadline(received: datetime, within: Span, company_closed: Collection[ClosedDay] = ()) -> datetime:
    """The end of a period of ``within`` that starts with the receipt at ``received`` (aware)."""
    return end_of_day(period_end(event_day(received), within, company_closed))


@dataclass(frozen=True)
class Deadline:
    """An item's deadline: the end of ``last_day`` (Copenhagen), and what became of an extension."""

    last_day: date
    extension: Literal["none", "counted", "ignored"] = "none"
    """``counted``: extended (recorded in time, with a reason); ``ignored``: recorded, but too late
    or without a reason, so the original deadline stands; ``none``: nothing recorded."""

    @property
    def at(self) -> datetime:
        """The instant the period ends: the day after ``last_day`` at 00:00 Copenhagen time."""
        return end_of_day(self.last_day)

    def status(self, now: datetime, warn_before: int) -> Status:
        """``overdue`` from ``at`` on; ``due_soon`` from ``warn_before`` days before the last day;
        else ``open``. With ``warn_before=3`` and the last day on day 10: open up to day 6, due
        soon on days 7 to 10, overdue from the start of day 11."""
        today = event_day(now)
        if now.astimezone(UTC) >= self.at.astimezone(UTC):
            return "overdue"
        return "due_soon" if (self.last_day - today).days <= warn_before else "open"


class DeadlineExtension(Strict):
    """An extension of the period, counted only if recorded before the original deadline with a reason."""

    at: Identifier
    """The column holding when the customer was told of the extension."""
    reason: Identifier
    """The column holding the reasons given (only whether it is empty is ever read)."""
    by: str
    """How much longer: an ISO-8601 period (``P2M`` for GDPR Art. 12(3)), added to ``within``."""

    @field_validator("by")
    @classmethod
    def _by(cls, v: str) -> str:
        Span.parse(v)
        return v


class DeadlineRule(Strict):
    """A legal time limit on a table's records, as a policy file writes it under ``deadline``.

    The table and its key come from the policy's ``records`` block. Example (GDPR Art. 12(3))::

        deadline:
          kind: answer
          within: P1M
          received: received_at
          done: completed_at
          extension: {at: extended_at, reason: extension_reason, by: P2M}
    """

    kind: Literal["notice", "answer"]
    """``notice``: tell the customer of data obtained from a third party (Art. 14, the privacy
    policy's 10 days); ``answer``: answer a privacy request (Art. 12(3))."""
    within: str
    """The period from receipt: an ISO-8601 period in one unit (``P10D``, ``P1M``)."""
    received: Identifier
    """The column holding when the item was received (timestamp with time zone)."""
    done: Identifier
    """The column holding when it was done; NULL while the item is open."""
    extension: DeadlineExtension | None = None
    """Only for ``answer``: how the period may be extended."""
    warn_before: Annotated[int, Field(strict=True, ge=0, le=31)] = 3
    """An open item is due soon from this many days before its last day."""

    @field_validator("within")
    @classmethod
    def _within(cls, v: str) -> str:
        Span.parse(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DeadlineRule:
        if self.extension is not None and self.kind != "answer":
            raise ValueError("extension: only an 'answer' deadline can be extended (GDPR Art. 12(3))")
        columns = self.columns()
        if len(set(columns)) != len(columns):
            raise ValueError(f"the columns {', '.join(columns)} must all differ")
        return self

    @property
    def within_span(self) -> Span:
        return Span.parse(self.within)

    def columns(self) -> tuple[str, ...]:
        """The columns the rule names: received, done and, with an extension, its two columns."""
        ext = () if self.extension is None else (self.extension.at, self.extension.reason)
        return (self.received, self.done, *ext)

    def deadline(
        self,
        received: datetime,
        *,
        extended_at: datetime | None = None,
        with_reason: bool = False,
        company_closed: Collection[ClosedDay] = (),
    ) -> Deadline:
        """The deadline of an item received at ``received`` (aware).

        ``extended_at`` is when the customer was told of an extension and ``with_reason`` whether
        a non-empty reason was recorded. The extension counts only if both are given and it was
        recorded before the original deadline; the period then runs ``within`` + ``by`` from the
        receipt (one month + two months: three months from the day of receipt).
        """
        day = event_day(received)
        original = period_end(day, self.within_span, company_closed)
        if self.extension is None or extended_at is None:
            return Deadline(original)
        if not with_reason or _utc(extended_at) >= end_of_day(original).astimezone(UTC):
            return Deadline(original, "ignored")
        longer = self.within_span + Span.parse(self.extension.by)
        return Deadline(period_end(day, longer, company_closed), "counted")


def _utc(instant: datetime) -> datetime:
    if not isinstance(instant, datetime) or instant.utcoffset() is None:
        raise ClockError("a recorded time must be a timezone-aware datetime")
    with _in_calendar("converting a time to UTC"):
        return instant.astimezone(UTC)


@contextmanager
def _in_calendar(doing: str) -> Iterator[None]:
    """Turn the ``ValueError``/``OverflowError`` of a date beyond years 1-9999 into ``ClockError``.

    The message names the step, never the date (a receipt time may be personal data).
    """
    try:
        yield
    except (ValueError, OverflowError) as e:
        raise ClockError(f"{doing} leaves the calendar (years 1 to 9999)") from e
