"""The nightly run on the two daylight-saving nights of Europe/Copenhagen.

The schedule: exactly one run every night, none skipped and none doubled, when 02:00 does not
exist (the last Sunday of March) and when it comes twice (the last Sunday of October). The run:
started by the scheduler in the repeated hour, its clock is that exact instant in UTC (cutoffs
are then computed in business time by ``retention.clock``, whose tests walk every hour of a year).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import _xcom, airflow_world, dag  # noqa: F401 - the fixture

CPH = ZoneInfo("Europe/Copenhagen")


def _runs_between(start: datetime, end: datetime) -> list[datetime]:
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = dag("retention_nightly").timetable
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    out: list[datetime] = []
    last: DataInterval | None = None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        assert info is not None
        if info.run_after > end:
            return out
        out.append(info.run_after)
        last = info.data_interval


def test_one_nightly_run_each_night_across_both_daylight_saving_changes() -> None:
    for night in (datetime(2026, 3, 29, tzinfo=CPH), datetime(2026, 10, 25, tzinfo=CPH)):
        runs = _runs_between(night - timedelta(days=3), night + timedelta(days=3))
        local_days = [r.astimezone(CPH).date() for r in runs]
        assert local_days == sorted(set(local_days)), f"{night.date()}: a night doubled"
        assert len(local_days) == 6, f"{night.date()}: a night skipped: {local_days}"
        for r in runs:
            if r.astimezone(CPH).date() != night.date():
                assert r.astimezone(CPH).hour == 2, r


def test_a_run_started_in_the_repeated_hour_counts_from_that_exact_instant(
    airflow_world: WorldEnv,  # noqa: F811 - the fixture imported above
) -> None:
    second_0230 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, after 02:30 CEST an hour earlier
    assert second_0230.astimezone(CPH).fold == 1 and second_0230.astimezone(CPH).utcoffset() == timedelta(
        hours=1
    )
    run = dag("retention_nightly").test(
        run_after=second_0230, logical_date=second_0230, run_conf={"dry_run": True}
    )
    assert run.state == "success"
    summary = _xcom(run, "finish_nightly")
    assert datetime.fromisoformat(summary["now"].replace("Z", "+00:00")) == second_0230
