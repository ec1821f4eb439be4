"""Legal time limits (#12): Danish holidays, Regulation 1182/71 periods, the 10-day and one-month edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from dateutil.easter import easter as dateutil_easter
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from retention.deadlines import (
    COMMON_CLOSING_DAYS,
    Deadline,
    DeadlineRule,
    Span,
    danish_public_holidays,
    deadline,
    easter_sunday,
    end_of_day,
    event_day,
    is_working_day,
    next_working_day,
    period_end,
)
from retention.errors import ClockError

CPH = ZoneInfo("Europe/Copenhagen")
P10D, P1M = Span.parse("P10D"), Span.parse("P1M")
NOTICE = DeadlineRule(kind="notice", within="P10D", received="received_at", done="customer_notified_at")
ANSWER = DeadlineRule.model_validate(
    yaml.safe_load(
        """
        kind: answer
        within: P1M
        received: received_at
        done: completed_at
        extension: {at: extended_at, reason: extension_reason, by: P2M}
        """
    )
)
PROPERTY = settings(max_examples=200, derandomize=True, deadline=None)


def cph(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH)  # type: ignore[misc]


# holidays


@pytest.mark.parametrize(
    ("year", "easter"),
    [(2019, date(2019, 4, 21)), (2023, date(2023, 4, 9)), (2024, date(2024, 3, 31)),
     (2025, date(2025, 4, 20)), (2026, date(2026, 4, 5)), (2038, date(2038, 4, 25))],
)  # fmt: skip
def test_easter_sunday(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_easter_agrees_with_dateutil_for_every_gregorian_year_to_4099() -> None:
    assert all(easter_sunday(y) == dateutil_easter(y) for y in range(1583, 4100))


def test_holidays_2025_by_name() -> None:
    assert danish_public_holidays(2025) == {
        date(2025, 1, 1): "Nytårsdag",
        date(2025, 4, 17): "Skærtorsdag",
        date(2025, 4, 18): "Langfredag",
        date(2025, 4, 20): "Påskedag",
        date(2025, 4, 21): "2. påskedag",
        date(2025, 5, 29): "Kristi himmelfartsdag",
        date(2025, 6, 8): "Pinsedag",
        date(2025, 6, 9): "2. pinsedag",
        date(2025, 12, 25): "Juledag",
        date(2025, 12, 26): "2. juledag",
    }


@pytest.mark.parametrize(
    ("year", "moving"),
    [
        (2024, [date(2024, 3, 28), date(2024, 3, 29), date(2024, 3, 31), date(2024, 4, 1),
                date(2024, 5, 9), date(2024, 5, 19), date(2024, 5, 20)]),
        (2026, [date(2026, 4, 2), date(2026, 4, 3), date(2026, 4, 5), date(2026, 4, 6),
                date(2026, 5, 14), date(2026, 5, 24), date(2026, 5, 25)]),
    ],
)  # fmt: skip
def test_moving_holidays_follow_easter(year: int, moving: list[date]) -> None:
    days = danish_public_holidays(year)
    assert sorted(days) == sorted([date(year, 1, 1), *moving, date(year, 12, 25), date(year, 12, 26)])


def test_store_bededag_up_to_2023_only() -> None:
    assert danish_public_holidays(2023)[date(2023, 5, 5)] == "Store bededag"
    assert len(danish_public_holidays(2023)) == 11
    assert "Store bededag" not in danish_public_holidays(2024).values()
    assert date(2024, 4, 26) not in danish_public_holidays(2024)  # the Friday it would have been
    assert not is_working_day(date(2023, 5, 5))
    assert is_working_day(date(2024, 4, 26))


def test_grundlovsdag_and_the_eves_are_working_days_unless_the_company_closes() -> None:
    for day in (date(2025, 6, 5), date(2025, 12, 24), date(2025, 12, 31)):
        assert is_working_day(day)
        assert not is_working_day(day, COMMON_CLOSING_DAYS)
    assert not is_working_day(date(2025, 5, 30), {date(2025, 5, 30)})  # one closing day (a bridge day)
    assert is_working_day(date(2026, 5, 29), {date(2025, 5, 30)})


def test_weekends_and_holidays_are_not_working_days() -> None:
    assert not is_working_day(date(2025, 9, 6))  # Saturday
    assert not is_working_day(date(2025, 9, 7))  # Sunday
    assert not is_working_day(date(2025, 4, 21))  # 2. påskedag
    assert next_working_day(date(2025, 4, 17)) == date(2025, 4, 22)  # Skærtorsdag to Tuesday after Easter
    assert next_working_day(date(2025, 9, 8)) == date(2025, 9, 8)


def test_a_closing_set_that_closes_everything_is_refused() -> None:
    every_day = {(m, d) for m in range(1, 13) for d in range(1, 32)}
    with pytest.raises(ClockError, match="no working day"):
        next_working_day(date(2025, 1, 2), every_day)


# periods


@pytest.mark.parametrize(
    ("text", "span"),
    [("P10D", Span(days=10)), ("P2W", Span(days=14)), ("P1M", Span(months=1)), ("P1Y", Span(months=12))],
)
def test_span_parse(text: str, span: Span) -> None:
    assert Span.parse(text) == span


@pytest.mark.parametrize("text", ["", "P", "P0D", "P1M10D", "10D", "p10d", "P-1D", "PT10H", "P11Y", "P 1M"])
def test_span_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        Span.parse(text)


# the 10-day notice at the edges

RECEIVED = cph(2025, 9, 1, 14, 0)  # day 0, a Monday; day 10 is Thursday 11 September


@pytest.mark.parametrize(
    ("now", "status"),
    [
        (cph(2025, 9, 7, 0, 0), "open"),  # day 6
        (cph(2025, 9, 7, 23, 59, 59), "open"),  # day 6, its last second
        (cph(2025, 9, 8, 0, 0), "due_soon"),  # day 7: three days left (warn_before=3)
        (cph(2025, 9, 11, 0, 0), "due_soon"),  # day 10
        (cph(2025, 9, 11, 23, 59, 59, 999999), "due_soon"),  # day 10, still within
        (cph(2025, 9, 12, 0, 0), "overdue"),  # day 11
        (cph(2025, 9, 20, 12, 0), "overdue"),
    ],
)
def test_notice_day_6_7_10_11(now: datetime, status: str) -> None:
    d = NOTICE.deadline(RECEIVED)
    assert d == Deadline(date(2025, 9, 11))
    assert d.at == cph(2025, 9, 12, 0, 0)
    assert d.status(now, NOTICE.warn_before) == status
    assert d.status(now.astimezone(UTC), NOTICE.warn_before) == status  # the zone of 'now' does not matter


def test_the_time_of_receipt_within_day_0_does_not_matter() -> None:
    for received in (cph(2025, 9, 1, 0, 0), cph(2025, 9, 1, 23, 59, 59, 999999)):
        assert deadline(received, P10D) == cph(2025, 9, 12, 0, 0)
    assert deadline(cph(2025, 8, 31, 23, 59, 59), P10D) == cph(2025, 9, 11, 0, 0)


@pytest.mark.parametrize(
    ("received", "last_day"),
    [
        (cph(2025, 9, 3, 9, 0), date(2025, 9, 15)),  # day 10 Saturday 13 Sep -> Monday
        (cph(2025, 9, 4, 9, 0), date(2025, 9, 15)),  # day 10 Sunday -> Monday
        (cph(2025, 4, 7, 9, 0), date(2025, 4, 22)),  # day 10 Skærtorsdag -> after 2. påskedag
        (cph(2025, 12, 15, 9, 0), date(2025, 12, 29)),  # day 10 Juledag, then 2. juledag, weekend
        (cph(2023, 4, 25, 9, 0), date(2023, 5, 8)),  # day 10 Store bededag 2023 -> Monday
        (cph(2024, 4, 16, 9, 0), date(2024, 4, 26)),  # the same Friday in 2024 is a working day
        (cph(2025, 12, 21, 9, 0), date(2025, 12, 31)),  # nytårsaftensdag: a working day by law
    ],
)
def test_notice_last_day_moves_to_the_next_working_day(received: datetime, last_day: date) -> None:
    assert NOTICE.deadline(received).last_day == last_day
    assert NOTICE.deadline(received).at == end_of_day(last_day)


def test_company_closing_days_move_the_notice_further() -> None:
    received = cph(2025, 12, 21, 9, 0)  # day 10 is 31 December; 1 January is Nytårsdag
    assert NOTICE.deadline(received, company_closed=COMMON_CLOSING_DAYS).last_day == date(2026, 1, 2)


# the one-month answer at month ends


@pytest.mark.parametrize(
    ("received", "last_day"),
    [
        (date(2025, 1, 31), date(2025, 2, 28)),
        (date(2024, 1, 31), date(2024, 2, 29)),  # leap year
        (date(2025, 3, 31), date(2025, 4, 30)),
        (date(2025, 4, 30), date(2025, 5, 30)),
        (date(2025, 1, 15), date(2025, 2, 17)),  # 15 Feb is a Saturday -> Monday
        (date(2025, 7, 31), date(2025, 9, 1)),  # 31 Aug is a Sunday -> Monday 1 September
        (date(2025, 12, 31), date(2026, 2, 2)),  # 31 Jan 2026 is a Saturday -> Monday 2 Feb
        (date(2025, 11, 25), date(2025, 12, 29)),  # 25 Dec Juledag, 26 Dec, weekend -> Monday 29
    ],
)
def test_one_month(received: date, last_day: date) -> None:
    assert period_end(received, P1M) == last_day
    d = ANSWER.deadline(datetime.combine(received, datetime.min.time(), tzinfo=CPH) + timedelta(hours=10))
    assert d.last_day == last_day
    assert d.extension == "none"


def test_one_month_from_31_january_2025_ends_with_28_february() -> None:
    d = ANSWER.deadline(cph(2025, 1, 31, 10, 0))
    assert d.at == cph(2025, 3, 1, 0, 0)
    assert d.status(cph(2025, 2, 28, 23, 59, 59), 3) == "due_soon"
    assert d.status(cph(2025, 3, 1, 0, 0), 3) == "overdue"
    assert d.status(cph(2025, 2, 24, 23, 59), 3) == "open"
    assert d.status(cph(2025, 2, 25, 0, 0), 3) == "due_soon"


# daylight saving time


def test_received_at_2330_on_the_summer_time_day() -> None:
    received = cph(2025, 3, 30, 23, 30)  # CEST, 21:30 UTC
    assert event_day(received.astimezone(UTC)) == date(2025, 3, 30)
    at = deadline(received.astimezone(UTC), P10D)
    assert at == cph(2025, 4, 10, 0, 0)
    assert at.astimezone(UTC) == datetime(2025, 4, 9, 22, 0, tzinfo=UTC)


def test_received_at_2330_on_the_winter_time_day() -> None:
    received = cph(2025, 10, 26, 23, 30)  # CET again, 22:30 UTC
    at = deadline(received.astimezone(UTC), P10D)
    assert at == cph(2025, 11, 6, 0, 0)
    assert at.astimezone(UTC) == datetime(2025, 11, 5, 23, 0, tzinfo=UTC)


def test_just_after_midnight_copenhagen_is_the_next_day_though_utc_says_otherwise() -> None:
    received = datetime(2025, 3, 29, 23, 30, tzinfo=UTC)  # 00:30 CET on 30 March
    assert event_day(received) == date(2025, 3, 30)
    assert deadline(received, P10D) == cph(2025, 4, 10, 0, 0)


def test_a_day_with_a_clock_change_ends_at_local_midnight() -> None:
    def length(day: date) -> timedelta:  # in UTC: aware datetimes of one zone subtract as wall clocks
        return end_of_day(day).astimezone(UTC) - end_of_day(day - timedelta(days=1)).astimezone(UTC)

    assert length(date(2025, 3, 30)) == timedelta(hours=23)
    assert length(date(2025, 10, 26)) == timedelta(hours=25)
    assert length(date(2025, 10, 27)) == timedelta(hours=24)
    assert end_of_day(date(2025, 3, 30)).astimezone(UTC) == datetime(2025, 3, 30, 22, 0, tzinfo=UTC)


def test_one_month_across_the_clock_change() -> None:
    d = ANSWER.deadline(cph(2025, 3, 28, 23, 30))  # CET; ends in CEST
    assert d.at == cph(2025, 4, 29, 0, 0)
    assert d.at.utcoffset() == timedelta(hours=2)


# extension (GDPR Art. 12(3))


@pytest.mark.parametrize(
    ("extended_at", "with_reason", "extension", "last_day"),
    [
        (None, False, "none", date(2025, 2, 28)),
        (None, True, "none", date(2025, 2, 28)),
        (cph(2025, 2, 10, 12, 0), True, "counted", date(2025, 4, 30)),  # three months from 31 January
        (cph(2025, 2, 28, 23, 59, 59), True, "counted", date(2025, 4, 30)),  # the last moment
        (cph(2025, 3, 1, 0, 0), True, "ignored", date(2025, 2, 28)),  # too late
        (cph(2025, 2, 10, 12, 0), False, "ignored", date(2025, 2, 28)),  # no reason
    ],
)
def test_extension_counts_only_in_time_and_with_a_reason(
    extended_at: datetime | None, with_reason: bool, extension: str, last_day: date
) -> None:
    d = ANSWER.deadline(cph(2025, 1, 31, 10, 0), extended_at=extended_at, with_reason=with_reason)
    assert (d.extension, d.last_day) == (extension, last_day)


def test_extension_in_time_is_judged_against_the_moved_deadline() -> None:
    # 31 July + 1 month = Sunday 31 August -> Monday 1 September; recorded on that Monday: in time
    d = ANSWER.deadline(cph(2025, 7, 31, 10, 0), extended_at=cph(2025, 9, 1, 16, 0), with_reason=True)
    assert (d.extension, d.last_day) == ("counted", date(2025, 10, 31))


def test_extension_is_ignored_by_a_rule_without_one() -> None:
    rule = ANSWER.model_copy(update={"extension": None})
    d = rule.deadline(cph(2025, 1, 31, 10, 0), extended_at=cph(2025, 2, 1, 10, 0), with_reason=True)
    assert d == Deadline(date(2025, 2, 28))


# clock errors


def test_naive_times_are_refused() -> None:
    with pytest.raises(ClockError, match="timezone-aware"):
        NOTICE.deadline(datetime(2025, 9, 1, 14, 0))
    with pytest.raises(ClockError, match="timezone-aware"):
        ANSWER.deadline(cph(2025, 1, 31), extended_at=datetime(2025, 2, 1), with_reason=True)
    with pytest.raises(ClockError, match="timezone-aware"):
        NOTICE.deadline(RECEIVED).status(datetime(2025, 9, 5), 3)


def test_beyond_the_calendar_is_a_clock_error_naming_no_date() -> None:
    with pytest.raises(ClockError, match="leaves the calendar") as e:
        ANSWER.deadline(cph(9999, 12, 15, 10, 0))
    assert str(e.value) == "adding a period to a date leaves the calendar (years 1 to 9999)"


# the rule model


def test_rule_defaults_and_columns() -> None:
    assert NOTICE.warn_before == 3
    assert NOTICE.columns() == ("received_at", "customer_notified_at")
    assert ANSWER.columns() == ("received_at", "completed_at", "extended_at", "extension_reason")
    assert ANSWER.extension is not None and ANSWER.extension.by == "P2M"


def test_rule_is_frozen() -> None:
    with pytest.raises(ValidationError):
        NOTICE.within = "P20D"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "Extra inputs"),
        ({"kind": "remind"}, "kind"),
        ({"within": "P1M10D"}, "one unit"),
        ({"within": "10 days"}, "one unit"),
        ({"received": "received at"}, "pattern"),
        ({"done": "1done"}, "pattern"),
        ({"done": "x" * 64}, "pattern"),
        ({"done": "received_at"}, "must all differ"),
        ({"warn_before": "3"}, "integer"),
        ({"warn_before": -1}, "greater than or equal"),
        ({"warn_before": True}, "integer"),
        ({"extension": {"at": "extended_at", "reason": "why", "by": "P2M", "x": 1}}, "Extra inputs"),
        ({"extension": {"at": "extended_at", "reason": "why", "by": "two months"}}, "one unit"),
        ({"extension": {"at": "extended_at", "reason": "why; drop", "by": "P2M"}}, "pattern"),
        ({"extension": {"at": "completed_at", "reason": "why", "by": "P2M"}}, "must all differ"),
    ],
)
def test_rule_refuses(change: dict[str, object], message: str) -> None:
    data = {**ANSWER.model_dump(), **change}
    with pytest.raises(ValidationError, match=message):
        DeadlineRule.model_validate(data)


def test_a_notice_cannot_be_extended() -> None:
    with pytest.raises(ValidationError, match="only an 'answer' deadline"):
        DeadlineRule.model_validate({**ANSWER.model_dump(), "kind": "notice"})


# properties

days_2020s = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))


@PROPERTY
@given(days_2020s, st.integers(1, 60))
def test_days_end_on_the_first_working_day_from_day_n(event: date, n: int) -> None:
    raw = event + timedelta(days=n)
    last = period_end(event, Span(days=n))
    assert is_working_day(last)
    assert raw <= last <= raw + timedelta(days=5)  # the longest run: Skærtorsdag to 2. påskedag
    assert all(not is_working_day(raw + timedelta(days=i)) for i in range((last - raw).days))


@PROPERTY
@given(days_2020s, st.integers(1, 3))
def test_months_keep_the_day_number_or_take_the_last_day(event: date, n: int) -> None:
    last = period_end(event, Span(months=n))
    month0 = event.year * 12 + event.month - 1 + n
    first_of_month = date(month0 // 12, month0 % 12 + 1, 1)
    next_first = date((month0 + 1) // 12, (month0 + 1) % 12 + 1, 1)
    raw = min(first_of_month + timedelta(days=event.day - 1), next_first - timedelta(days=1))
    assert last == next_working_day(raw)
    assert raw.day == event.day or raw == next_first - timedelta(days=1)


@PROPERTY
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    st.sampled_from([P10D, P1M, Span(months=3)]),
)
def test_deadline_is_local_midnight_and_never_before_the_raw_end(received: datetime, within: Span) -> None:
    at = deadline(received, within)
    local = at.astimezone(CPH)
    assert (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
    assert local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert at - received > timedelta(days=10 if within == P10D else 28)


@PROPERTY
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2098, 1, 1), timezones=st.just(UTC)),
    st.lists(st.integers(0, 200 * 24 * 60), min_size=2, max_size=6),
)
def test_status_only_moves_forward(received: datetime, minutes: list[int]) -> None:
    d = ANSWER.deadline(received)
    order = {"open": 0, "due_soon": 1, "overdue": 2}
    seen = [order[d.status(received + timedelta(minutes=m), 3)] for m in sorted(minutes)]
    assert seen == sorted(seen)


@PROPERTY
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2098, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 40 * 24 * 60),
    st.booleans(),
)
def test_an_extension_never_shortens_and_counts_only_before_the_original(
    received: datetime, after_minutes: int, with_reason: bool
) -> None:
    original = ANSWER.deadline(received)
    extended_at = received + timedelta(minutes=after_minutes)
    d = ANSWER.deadline(received, extended_at=extended_at, with_reason=with_reason)
    assert d.last_day >= original.last_day
    assert (d.extension == "counted") == (with_reason and extended_at < original.at)
    if d.extension == "counted":
        assert d.last_day == period_end(event_day(received), Span(months=3))
