"""Param ``restored_to`` of ``replay_erasures``: refused by the form's schema, and again by the first task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retention.errors import TerminalError
from retention_airflow.replay_tasks import RESTORED_TO_SCHEMA, parse_restored_to

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_a_past_moment_with_its_zone_is_taken_in_utc() -> None:
    assert parse_restored_to("2026-06-14T02:00:00+02:00", NOW) == datetime(2026, 6, 14, 0, 0, tzinfo=UTC)
    assert parse_restored_to("2026-06-15T12:00:00Z", NOW) == NOW


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-06-16T02:00:00+02:00", "future"),
        ("2026-06-14T02:00:00", "time zone"),
        ("yesterday", "not an ISO 8601"),
        ("", "required"),
        (None, "required"),
        (20260614, "required"),
    ],
)
def test_a_future_zoneless_or_unparsable_moment_is_refused(value: object, problem: str) -> None:
    with pytest.raises(TerminalError, match=problem):
        parse_restored_to(value, NOW)


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-06-14T02:00:00", "2026-06-14", "2026-06-14T02:00+02:00\n"]
)
def test_the_trigger_form_refuses_what_is_not_a_date_time_with_a_zone(value: str) -> None:
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        Param(value, **RESTORED_TO_SCHEMA).resolve()
    assert Param("2026-06-14T02:00:00+02:00", **RESTORED_TO_SCHEMA).resolve() == "2026-06-14T02:00:00+02:00"


def test_the_dag_needs_restored_to_and_defaults_to_a_dry_run() -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.test_dagbag import DAGS

    dag = DagBag(dag_folder=str(DAGS)).dags["replay_erasures"]
    assert dag.params["dry_run"] is True
    # Empty in the form (a required param would break the failure alert): find_tombstones refuses it.
    assert dag.params["restored_to"] is None
    with pytest.raises(TerminalError, match="required"):
        parse_restored_to(dag.params["restored_to"], NOW)
