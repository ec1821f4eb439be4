"""The ``privacy_deadlines`` DAG with ``dag.test()`` on real PostgreSQL and the shipped policies.

The reference schema holds a few third-party receipts and privacy requests at the edges of their
deadlines; the DAG's mapped ``watch_deadline`` reports exactly the overdue and soon-due ones and
fails (which alerts) while anything is overdue, and is green once the late item is done.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.world_schema import create_schema, metadata

COPENHAGEN_NOON = "12:00:00+01:00"
NOW = datetime.fromisoformat(f"2026-11-20T{COPENHAGEN_NOON}")  # a Friday
# Third-party data, received at noon on these days: the 10-day notice ends at the end of day 10.
NOTICES = {
    1: ("2026-11-09", None),  # day 11 today: overdue
    2: ("2026-11-10", None),  # day 10 is today: still in time, due soon
    3: ("2026-11-14", None),  # day 6: within time, not yet due soon (warn 3 days before)
    4: ("2026-11-01", "2026-11-05"),  # done in time: not open
}
# Privacy requests: one month from receipt.
REQUESTS = {
    10: ("2026-10-19", None, None),  # ended Thursday 19 November: overdue
    11: ("2026-10-19", "2026-11-02", "Oversættelser fra tre arkiver skal gennemgås"),  # extended to 19 Jan
    12: ("2026-10-31", None, None),  # the month ends 30 November: in time
}


def _at(day: str | None) -> datetime | None:
    return None if day is None else datetime.fromisoformat(f"{day}T{COPENHAGEN_NOON}")


@pytest.fixture
def deadline_airflow(fresh_db: Engine, airflow_db: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    from tests.integration.test_dags import _conn_json

    create_schema(fresh_db)
    t = metadata.tables
    with fresh_db.begin() as c:
        c.execute(
            t["customers"].insert(),
            [
                {
                    "id": 1,
                    "customer_no": "AK-000001",
                    "name": "Kunde",
                    "address": "Vej 1",
                    "created_at": NOW,
                    "last_activity_at": NOW,
                }
            ],
        )
        c.execute(
            t["third_party_data"].insert(),
            [
                {
                    "id": i,
                    "customer_id": 1,
                    "source": "partner",
                    "description": "oplysning",
                    "received_at": _at(received),
                    "customer_notified_at": _at(notified),
                }
                for i, (received, notified) in NOTICES.items()
            ],
        )
        c.execute(
            t["privacy_requests"].insert(),
            [
                {
                    "id": i,
                    "customer_id": 1,
                    "request_ref": f"PR-{i}",
                    "kind": "access",
                    "received_at": _at(received),
                    "completed_at": None,
                    "extended_at": _at(extended),
                    "extension_reason": reason,
                }
                for i, (received, extended, reason) in REQUESTS.items()
            ],
        )
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(fresh_db))
    return fresh_db


def _run() -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run the DAG at NOW; return the run and each category's report from XCom."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tests.integration.test_dags import dag

    watch = dag("privacy_deadlines")
    for task in watch.tasks:
        task.retries = 0
    run = watch.test(run_conf={"as_of": NOW.isoformat()})
    reports: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        for ti in tis:
            if ti.task_id != "watch_deadline":
                continue
            row = (
                session.query(XComModel)
                .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=ti.task_id, map_index=ti.map_index)
                .filter_by(key="report")
                .one()
            )
            value = row.value if not isinstance(row.value, str) else json.loads(row.value)
            reports[value["table"]] = value | {"state": str(ti.state), "label": ti.rendered_map_index}
    return run, reports


def test_the_watch_names_exactly_the_overdue_and_soon_due_items_and_fails(deadline_airflow: Engine) -> None:
    run, reports = _run()

    assert run.state == "failed"
    notices, requests = reports["third_party_data"], reports["privacy_requests"]
    assert (notices["state"], notices["label"]) == ("failed", "third_party_data")
    assert (notices["open"], notices["overdue"], notices["due_soon"], notices["unclear"]) == (3, 1, 1, 0)
    assert (notices["overdue_keys"], notices["due_soon_keys"]) == ([1], [2])
    assert requests["state"] == "failed"
    assert (requests["open"], requests["overdue"], requests["due_soon"], requests["extended"]) == (3, 1, 0, 1)
    assert requests["overdue_keys"] == [10]


def test_the_watch_is_green_once_the_late_items_are_done(deadline_airflow: Engine) -> None:
    with deadline_airflow.begin() as c:
        c.execute(sa.text("UPDATE third_party_data SET customer_notified_at = :t WHERE id = 1"), {"t": NOW})
        c.execute(sa.text("UPDATE privacy_requests SET completed_at = :t WHERE id = 10"), {"t": NOW})

    run, reports = _run()

    assert run.state == "success"
    assert {t: (r["state"], r["overdue"], r["due_soon"]) for t, r in reports.items()} == {
        "third_party_data": ("success", 0, 1),
        "privacy_requests": ("success", 0, 0),
    }
    assert reports["privacy_requests"]["earliest_deadline"] == "2026-12-01T00:00:00+01:00"  # 30 November
