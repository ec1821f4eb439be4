"""Cutoffs: business time in Europe/Copenhagen, never early (DST, leap days, month ends, FY ends)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from retention.clock import cutoff_for, local_naive, shift, until_for
from retention.errors import ClockError, RetentionError
from retention.policy import Period, Retention

CPH = ZoneInfo("Europe/Copenhagen")


def rule(period: str, counts_from: str = "event", fy: str = "01-01") -> Retention:
    return Retention(
        period=period,
        counts_from=counts_from,
        event="the event",
        anchor="at",  # type: ignore[arg-type]
        financial_year_start=fy,
    )


def test_item_exactly_at_the_cutoff_is_due_and_one_microsecond_later_is_not() -> None:
    now = datetime(2026, 6, 15, 2, 0, tzinfo=CPH)
    c = cutoff_for(rule("P3Y"), now)
    exact = datetime(2023, 6, 15, 2, 0, tzinfo=CPH)
    assert c.instant == exact.astimezone(UTC)
    assert c.admits(exact)
    assert not c.admits(exact + timedelta(microseconds=1))


def test_leap_day_anchor_is_due_only_when_a_full_year_has_passed() -> None:
    leap = datetime(2024, 2, 29, 12, 0, tzinfo=CPH)
    # 2025-02-28 12:00 is "one year later" (clamped); before it the record is not due.
    assert not cutoff_for(rule("P1Y"), datetime(2025, 2, 28, 11, 59, tzinfo=CPH)).admits(leap)
    assert not cutoff_for(rule("P1Y"), datetime(2025, 2, 28, 12, 0, tzinfo=CPH)).admits(leap)
    assert cutoff_for(rule("P1Y"), datetime(2025, 3, 1, 12, 0, tzinfo=CPH)).admits(leap)


def test_month_end_clamps_towards_keeping() -> None:
    now = datetime(2027, 3, 31, 10, 0, tzinfo=CPH)
    c = cutoff_for(rule("P1M"), now)
    assert c.instant == datetime(2027, 2, 28, 10, 0, tzinfo=CPH).astimezone(UTC)


@pytest.mark.parametrize(
    "now_utc",
    [
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST; one day earlier 02:30 does not exist
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET; one day earlier 02:30 exists twice
    ],
)
def test_dst_gap_and_fold_resolve_to_the_earlier_instant(now_utc: datetime) -> None:
    c = cutoff_for(rule("P1D"), now_utc)
    # Never later than 24 real hours ago: nothing younger than a full local day is due.
    assert c.instant <= now_utc - timedelta(hours=23)
    assert c.instant.tzinfo is not None
    anchor_just_after = c.instant + timedelta(seconds=1)
    assert not c.admits(anchor_just_after)


def test_dst_cutoff_values() -> None:
    spring = cutoff_for(rule("P1D"), datetime(2026, 3, 30, 0, 30, tzinfo=UTC))
    assert spring.instant == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    autumn = cutoff_for(rule("P1D"), datetime(2026, 10, 26, 1, 30, tzinfo=UTC))
    assert autumn.instant == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_end_of_financial_year_anchor() -> None:
    r = rule("P5Y", "end_of_financial_year")
    now = datetime(2026, 6, 15, 2, 0, tzinfo=CPH)
    c = cutoff_for(r, now)
    assert c.date_bound == date(2021, 1, 1)
    assert c.admits(date(2020, 12, 31))
    assert not c.admits(date(2021, 1, 1))
    # On New Year's night the boundary moves by exactly one year, at local midnight.
    before = cutoff_for(r, datetime(2026, 12, 31, 23, 59, tzinfo=CPH))
    after = cutoff_for(r, datetime(2027, 1, 1, 0, 0, tzinfo=CPH))
    assert before.date_bound == date(2021, 1, 1)
    assert after.date_bound == date(2022, 1, 1)
    assert after.instant == datetime(2022, 1, 1, 0, 0, tzinfo=CPH).astimezone(UTC)
    assert not after.inclusive


def test_financial_year_not_on_calendar_year() -> None:
    r = rule("P5Y", "end_of_financial_year", fy="07-01")
    c = cutoff_for(r, datetime(2026, 6, 15, tzinfo=CPH))
    # FY 2019/20 ended 2020-07-01; +5Y = 2025-07-01 <= now; FY 2020/21 ends 2021-07-01 -> 2026-07-01 > now.
    assert c.date_bound == date(2020, 7, 1)
    assert until_for(r, date(2020, 6, 30)) == date(2025, 7, 1)
    assert until_for(r, date(2020, 7, 1)) == date(2026, 7, 1)


def test_until_dates() -> None:
    assert until_for(rule("P5Y", "end_of_financial_year"), date(2024, 3, 1)) == date(2030, 1, 1)
    assert until_for(rule("P1Y"), datetime(2024, 2, 29, 12, tzinfo=UTC)) == date(2025, 2, 28)
    assert until_for(rule("P30D"), date(2026, 1, 1)) == date(2026, 2, 1)


def test_a_naive_anchor_is_read_in_its_declared_zone() -> None:
    # A wall time of 23:30 on 31 December: written in Copenhagen, the record's day is the 31st;
    # read as UTC it would be 00:30 on the 1st in Copenhagen, a day later.
    naive = datetime(2025, 12, 31, 23, 30)
    as_utc = until_for(rule("P1D"), naive)
    in_copenhagen = until_for(rule("P1D").model_copy(update={"anchor_time_zone": "Europe/Copenhagen"}), naive)
    assert as_utc == date(2026, 1, 2), "23:30 UTC is 00:30 on the 1st in Copenhagen"
    assert in_copenhagen == date(2026, 1, 1)


@pytest.mark.parametrize("period", ["P1M", "P1Y", "P3Y", "P18M", "P30D", "P1Y1M1D"])
def test_cutoff_is_never_early_over_a_year_of_hourly_nows(period: str) -> None:
    """For every hour of a year (DST included): anchor <= cutoff implies anchor + period <= now."""
    p = Period.parse(period)
    r = rule(period)
    t = datetime(2027, 1, 1, tzinfo=UTC)
    for _ in range(0, 366 * 24, 7):
        c = cutoff_for(r, t)
        local = c.instant.astimezone(CPH).replace(tzinfo=None)
        ends = shift(local, p, +1).replace(tzinfo=CPH)
        assert ends.astimezone(UTC) <= t + timedelta(hours=1), (period, t)  # +1h: a folded hour maps back
        t += timedelta(hours=7)


def test_a_naive_now_is_a_terminal_clock_error() -> None:
    with pytest.raises(ClockError, match="timezone-aware") as raised:
        cutoff_for(rule("P1Y"), datetime(2026, 6, 15, 2, 0))
    assert isinstance(raised.value, RetentionError) and raised.value.terminal is True
    assert not isinstance(raised.value, ValueError)  # the Airflow edge would retry it as transient
    with pytest.raises(ClockError):
        local_naive(datetime(2026, 6, 15))


@pytest.mark.parametrize(
    "compute",
    [
        pytest.param(
            lambda: cutoff_for(rule("P100Y"), datetime(50, 1, 1, tzinfo=UTC)), id="cutoff-before-year-1"
        ),
        pytest.param(
            lambda: cutoff_for(rule("P5Y", "end_of_financial_year"), datetime(3, 6, 1, tzinfo=UTC)),
            id="fy-boundary-before-year-1",
        ),
        pytest.param(lambda: until_for(rule("P5Y"), date(9999, 6, 30)), id="until-after-9999"),
        pytest.param(lambda: until_for(rule("P1D"), date(9999, 12, 31)), id="day-after-9999-12-31"),
        pytest.param(
            lambda: until_for(rule("P1Y"), datetime(9999, 12, 31, 23, 30, tzinfo=UTC)), id="local-after-9999"
        ),
        pytest.param(
            lambda: until_for(rule("P1Y", "end_of_financial_year"), date(9999, 3, 1)), id="fy-after-9999"
        ),
        pytest.param(lambda: shift(datetime(9999, 6, 1), Period(years=1), +1), id="shift-after-9999"),
        pytest.param(lambda: shift(datetime(1, 1, 15), Period(days=30), -1), id="shift-before-year-1"),
    ],
)
def test_a_date_beyond_the_calendar_is_a_terminal_clock_error(compute: Callable[[], object]) -> None:
    with pytest.raises(ClockError, match="leaves the calendar") as raised:
        compute()
    assert isinstance(raised.value, RetentionError) and raised.value.terminal is True
    assert not isinstance(raised.value, (ValueError, OverflowError))
