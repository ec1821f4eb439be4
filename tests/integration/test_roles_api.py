"""Least privilege through Airflow's REST API with the FAB auth manager (as in docker-compose.yaml).

A real ``airflow api-server`` with its own metadata DB, the retention roles and one user per
role (``harness.airflow_setup.FabAirflow``). The DAGs are parsed there, so each DAG's
``access_control`` is what Airflow enforces. No scheduler runs: a run that gets created waits,
and the tests count runs through the admin. For an approval, a nightly run is created through
the API and its ``category.approve`` task parked awaiting input in the metadata DB, as the
``ApprovalOperator`` leaves it; the answer then goes through the HITL endpoint as in the UI.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.airflow_setup import FabAirflow, FabUser
from harness.server_process import started
from retention_airflow.roles import APPROVER, PRIVACY_STAFF, VIEWER

ERASURE = "customer_erasure"
ACCESS_REPORT = "customer_access_report"
NIGHTLY = "retention_nightly"
APPROVE_TASK = "category.approve"
CONF = {"customer_id": "42", "request_ref": "PR-2026-00042", "reason": "erasure_request", "dry_run": True}

ADMIN = FabUser("admin", "admin-pw-1", ("Admin",))
VIEWER_USER = FabUser("vera", "viewer-pw-1", (VIEWER,))
STAFF_USER = FabUser("sofie", "staff-pw-1", (PRIVACY_STAFF,))
APPROVER_USER = FabUser("anders", "approver-pw-1", (APPROVER,))


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabAirflow]:
    """One FAB API server for the module, with a user per role and the admin."""
    server = FabAirflow(tmp_path_factory.mktemp("fab"), [ADMIN, VIEWER_USER, STAFF_USER, APPROVER_USER])
    with started(server, server.start):
        yield server


def client(fab: FabAirflow, user: FabUser) -> httpx.Client:
    """A client on ``/api/v2`` with ``user``'s bearer token."""
    headers = {"Authorization": f"Bearer {fab.token(user)}"}
    return httpx.Client(base_url=f"{fab.url}/api/v2", headers=headers, timeout=30)


def run_ids(fab: FabAirflow, dag_id: str) -> set[str]:
    """Every run of ``dag_id``, as the admin sees them."""
    with client(fab, ADMIN) as admin:
        response = admin.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100})
        response.raise_for_status()
        return {run["dag_run_id"] for run in response.json()["dag_runs"]}


def trigger(http: httpx.Client, dag_id: str, conf: dict[str, Any]) -> httpx.Response:
    return http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})


def park_approval(db: Path, run_id: str) -> None:
    """Park the run's approval task awaiting input with a pending request, as ``ApprovalOperator`` does."""
    with closing(sqlite3.connect(db)) as conn, conn:
        row = conn.execute(
            "SELECT id FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (NIGHTLY, run_id, APPROVE_TASK),
        ).fetchone()
        assert row is not None, f"no {APPROVE_TASK} task instance in run {run_id}"
        conn.execute("UPDATE task_instance SET state = 'awaiting_input' WHERE id = ?", (row[0],))
        conn.execute(
            "INSERT INTO hitl_detail (ti_id, options, subject, body, defaults, multiple, params, "
            "assignees, created_at, params_input) VALUES (?, ?, ?, NULL, ?, 0, '{}', NULL, ?, '{}')",
            (
                row[0],
                json.dumps(["Approve", "Reject"]),
                "over the cap",
                json.dumps(["Reject"]),
                datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
            ),
        )


def hitl_path(run_id: str) -> str:
    return f"/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances/{APPROVE_TASK}/-1/hitlDetails"


def test_a_viewer_cannot_trigger_an_erasure_or_an_access_report_and_no_run_exists(fab: FabAirflow) -> None:
    before = {dag_id: run_ids(fab, dag_id) for dag_id in (ERASURE, ACCESS_REPORT)}
    with client(fab, VIEWER_USER) as viewer:
        refused = {
            ERASURE: trigger(viewer, ERASURE, CONF).status_code,
            ACCESS_REPORT: trigger(viewer, ACCESS_REPORT, {"customer_id": "42"}).status_code,
        }
        # the per-customer DAGs' runs hold the customer id: hidden from viewers
        hidden = viewer.get(f"/dags/{ERASURE}/dagRuns").status_code
        nightly = viewer.get(f"/dags/{NIGHTLY}/dagRuns")
    assert refused == {ERASURE: 403, ACCESS_REPORT: 403}
    assert hidden == 403
    assert nightly.status_code == 200, "a viewer sees the nightly runs"
    assert {dag_id: run_ids(fab, dag_id) for dag_id in before} == before


@pytest.mark.long  # each a FAB API server's worth of time; the viewer's refusal stays in make test
def test_privacy_staff_trigger_an_erasure_and_an_approver_cannot(fab: FabAirflow) -> None:
    before = run_ids(fab, ERASURE)
    with client(fab, APPROVER_USER) as approver:
        assert trigger(approver, ERASURE, CONF).status_code == 403
    assert run_ids(fab, ERASURE) == before
    with client(fab, STAFF_USER) as staff:
        response = trigger(staff, ERASURE, CONF)
        nightly = trigger(staff, NIGHTLY, {})
    assert response.status_code == 200, response.text[:300]
    assert run_ids(fab, ERASURE) == before | {response.json()["dag_run_id"]}
    assert nightly.status_code == 403, "the nightly run is not privacy staff's to start"


@pytest.mark.long  # each a FAB API server's worth of time; the viewer's refusal stays in make test
def test_only_an_approver_answers_a_cap_approval(fab: FabAirflow) -> None:
    with client(fab, ADMIN) as admin:
        created = trigger(admin, NIGHTLY, {})
        assert created.status_code == 200, created.text[:300]
        run_id = created.json()["dag_run_id"]
        park_approval(fab.metadata_db, run_id)
        answer = {"chosen_options": ["Approve"], "params_input": {}}
        with client(fab, VIEWER_USER) as viewer, client(fab, STAFF_USER) as staff:
            # a viewer sees the pending request (Required actions) but may not answer it
            assert viewer.get(hitl_path(run_id)).status_code == 200
            refused = {
                "viewer": viewer.patch(hitl_path(run_id), json=answer).status_code,
                "staff": staff.patch(hitl_path(run_id), json=answer).status_code,
            }
        pending = admin.get(hitl_path(run_id)).json()
        with client(fab, APPROVER_USER) as approver:
            approved = approver.patch(hitl_path(run_id), json=answer)
        answered = admin.get(hitl_path(run_id)).json()
    assert refused == {"viewer": 403, "staff": 403}
    assert pending["response_received"] is False, "a refused answer must leave the request open"
    assert approved.status_code == 200, approved.text[:300]
    assert answered["response_received"] is True
    assert answered["chosen_options"] == ["Approve"]
    assert answered["responded_by_user"]["name"] == APPROVER_USER.name
