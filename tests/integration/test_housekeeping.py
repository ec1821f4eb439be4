"""``retention_housekeeping`` (#13): Airflow's own records of the per-customer DAGs, purged.

The K deployment (``test_subject_deployment``) erases customer K-00042 through ``customer_erasure``
(``dag.test()``); an operator's trigger is refused by Airflow's REST API (in process) twice: once
with an e-mail typed as the customer id, once with the customer id and a malformed request
reference. Both land in the event log. A run of another DAG, and a queued erasure run of another
customer, must survive. Then ``retention_housekeeping`` runs with its ``keep`` param P0D (a window
of zero: ``_airflow.yaml``'s keep cannot be zero, a run's param may shorten it): first as a dry
run, which changes nothing, then for real. Afterwards the customer's id and canaries are in no
column of any table of Airflow's metadata database and in no task-log file, and the ledger holds
one entry per housekeeping run with the counts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.ledger import Ledger
from tests.integration.test_subject_deployment import (  # noqa: F401 - fixtures
    FIXTURE,
    KWorld,
    _erasure_dag,
    k_airflow,
    k_world,
)

CUSTOMER = "K-00042"
QUEUED_CUSTOMER = "K-00043"
CANARIES = (CUSTOMER, "karen@example.dk", "Karen Kundesen")
TYPED_BY_MISTAKE = "karen@example.dk"
HOUSEKEEPING = "retention_housekeeping"
ERASURE = "customer_erasure"
OTHER_DAG = "privacy_deadlines"
QUEUED_RUN = "manual__housekeeping-test-queued"
ORPHAN_RUN = "manual__2020-01-01T00:00:00+00:00"


@pytest.fixture
def hk_airflow(
    k_airflow: KWorld,  # noqa: F811 - the fixture imported above
    airflow_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KWorld]:
    """The K deployment with ``_airflow.yaml`` beside its policies and the metadata-DB connection."""
    policies = tmp_path / "policies"
    policies.mkdir()
    for f in (FIXTURE / "policies").glob("*.yaml"):
        (policies / f.name).write_text(f.read_text())
    (policies / "_airflow.yaml").write_text(
        "keep: P14D\ndags: [customer_erasure, customer_access_report]\n"
        "rationale: The test deployment keeps Airflow's records two weeks.\n"
    )
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(policies))
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_METADATA",
        json.dumps(
            {"conn_type": "sqlite", "host": str(airflow_db / "airflow.db"), "extra": {"timeout": "30"}}
        ),
    )
    yield k_airflow
    _delete_queued_run()


# -- what Airflow holds ---------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
        return str(value.decode("utf-8", "replace"))
    return repr(value)


def metadata_dump(airflow_home: Path) -> dict[str, str]:
    """Every column of every row of every table of the metadata DB, as text per table."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {
            table: "\n".join(
                " | ".join(_text(v) for v in row)
                for row in db.execute(f'select * from "{table}"')  # noqa: S608 - names from sqlite_master
            )
            for table in tables
        }


def found_in_metadata(airflow_home: Path, values: tuple[str, ...]) -> dict[str, list[str]]:
    """Table -> the values found in it."""
    found: dict[str, list[str]] = {}
    for table, text in metadata_dump(airflow_home).items():
        hits = [v[:3] + "..." for v in values if v in text]
        if hits:
            found[table] = hits
    return found


def log_folder() -> Path:
    from airflow.configuration import conf

    return Path(conf.get("logging", "base_log_folder"))


def found_in_logs(folder: Path, values: tuple[str, ...]) -> list[str]:
    """Files under ``folder`` (links not followed) holding one of ``values``."""
    hits = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            content = path.read_bytes().decode("utf-8", "replace")
            if any(v in content for v in values):
                hits.append(str(path.relative_to(folder)))
    return hits


def run_rows(dag_id: str, run_id: str) -> dict[str, int]:
    """How many rows of the run ``dag_run``, ``task_instance`` and ``xcom`` hold."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            model.__tablename__: session.query(model).filter_by(dag_id=dag_id, run_id=run_id).count()
            for model in (DagRun, TaskInstance, XComModel)
        }


def event_log(dag_id: str) -> list[tuple[str, str | None, str]]:
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(r.event, r.run_id, r.extra or "") for r in session.query(Log).filter(Log.dag_id == dag_id)]


# -- what the test sets up ------------------------------------------------------------------------


def refuse_triggers(airflow_home: Path) -> list[int]:
    """Two triggers of ``customer_erasure`` that Airflow's REST API refuses (invalid params)."""
    from airflow.api_fastapi.app import create_app, create_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    token = create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="ops", role="ADMIN"))
    confs = [
        {"customer_id": TYPED_BY_MISTAKE, "request_ref": "PR-2026-00777", "reason": "erasure_request"},
        {"customer_id": CUSTOMER, "request_ref": "not a reference", "reason": "erasure_request"},
    ]
    try:
        with TestClient(create_app("core"), headers={"Authorization": f"Bearer {token}"}) as client:
            return [
                client.post(
                    f"/api/v2/dags/{ERASURE}/dagRuns", json={"logical_date": None, "conf": conf}
                ).status_code
                for conf in confs
            ]
    finally:
        purge_cached_app()


def queue_a_run() -> None:
    """A queued erasure run of another customer, triggered long ago, and its event-log row."""
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    long_ago = datetime.now(UTC) - timedelta(days=400)
    with create_session() as session:
        session.add(
            DagRun(
                dag_id=ERASURE,
                run_id=QUEUED_RUN,
                run_type="manual",
                state=DagRunState.QUEUED,
                run_after=long_ago,
                queued_at=long_ago,
                conf={"customer_id": QUEUED_CUSTOMER, "request_ref": "PR-2026-00778"},
            )
        )
        session.add(Log(event="trigger_dag_run", dag_id=ERASURE, run_id=QUEUED_RUN, extra=QUEUED_CUSTOMER))
    with create_session() as session:
        session.query(Log).filter(Log.run_id == QUEUED_RUN).update({Log.dttm: long_ago})


def _delete_queued_run() -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Log).filter(Log.run_id == QUEUED_RUN).delete()
        session.query(DagRun).filter(DagRun.run_id == QUEUED_RUN).delete()


def plant_task_logs(folder: Path, erasure_run: str, other_run: str, outside: Path) -> dict[str, Path]:
    """Task-log files as a worker writes them (``dag.test()`` logs to the console only), a link out
    of the folder inside the erasure run's folder, and an orphan folder of a deleted run."""
    files = {
        "erasure": folder / f"dag_id={ERASURE}/run_id={erasure_run}/task_id=prepare_run/attempt=1.log",
        "other": folder / f"dag_id={OTHER_DAG}/run_id={other_run}/task_id=deadline_categories/attempt=1.log",
        "orphan": folder / f"dag_id={ERASURE}/run_id={ORPHAN_RUN}/task_id=prepare_run/attempt=1.log",
        "queued": folder / f"dag_id={ERASURE}/run_id={QUEUED_RUN}/task_id=prepare_run/attempt=1.log",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        who = CUSTOMER if name in ("erasure", "orphan") else "someone else"
        path.write_text(f'{{"event": "params", "customer_id": "{who}"}}\n')
    outside.write_text("not Airflow's: must survive the purge")
    (files["erasure"].parent / "outside.log").symlink_to(outside)
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    for path in (files["orphan"], files["orphan"].parent, files["orphan"].parents[1]):
        os.utime(path, (old, old))
    return files


def housekeeping(**conf: Any) -> tuple[Any, dict[str, Any]]:
    from tests.integration.test_dags import _xcom, dag

    hk = dag(HOUSEKEEPING)
    for t in hk.tasks:
        t.retries = 0
    run = hk.test(run_conf=conf)
    return run, _xcom(run, "purge_airflow_records") if run.state == "success" else {}


def other_dag_run() -> Any:
    from tests.integration.test_dags import dag

    return dag(OTHER_DAG).test(run_conf={})


# -- the test -------------------------------------------------------------------------------------


def test_after_housekeeping_with_a_window_of_zero_the_customer_is_nowhere_in_airflow(
    hk_airflow: KWorld, airflow_db: Path, tmp_path: Path
) -> None:
    erasure = _erasure_dag(CUSTOMER)
    assert erasure.state == "success"
    assert refuse_triggers(airflow_db) == [400, 400]
    other = other_dag_run()
    assert other.state == "success"
    queue_a_run()
    folder = log_folder()
    files = plant_task_logs(folder, erasure.run_id, other.run_id, tmp_path / "outside.log")

    before = found_in_metadata(airflow_db, CANARIES)
    assert "dag_run" in before and "log" in before, before
    assert any(TYPED_BY_MISTAKE in extra for _e, _r, extra in event_log(ERASURE)), "refused trigger logged"
    other_before = run_rows(OTHER_DAG, other.run_id)
    ledger = Ledger(hk_airflow.engine)
    entries_before = ledger.count()

    dry, counted = housekeeping(dry_run=True, keep="P0D")
    assert dry.state == "success"
    assert counted["dry_run"] and counted["verified"] is None
    assert counted["runs"] >= 1 and counted["rows"]["dag_run"] >= 1 and counted["rows"]["log"] >= 2
    assert counted["log_files"] >= 2, counted  # the run's log file and the orphan's
    assert found_in_metadata(airflow_db, CANARIES) == before, "a dry run changed nothing"
    assert run_rows(ERASURE, erasure.run_id)["dag_run"] == 1 and files["erasure"].exists()

    real, purged = housekeeping(dry_run=False, keep="P0D")
    assert real.state == "success"
    assert purged["verified"] is True and "left" not in purged
    assert purged["keep"] == "P0D" and purged["dags"] == ["customer_erasure", "customer_access_report"]
    assert purged["rows"]["dag_run"] >= 1 and purged["rows"]["task_instance"] >= 5, purged
    assert purged["rows"]["xcom"] >= 1 and purged["rows"]["log"] >= 2, purged

    assert found_in_metadata(airflow_db, CANARIES) == {}
    assert found_in_logs(folder, CANARIES) == []
    assert not files["erasure"].parents[1].exists() and not files["orphan"].parents[1].exists()
    assert (tmp_path / "outside.log").read_text().startswith("not Airflow's"), "a link was followed"
    assert run_rows(ERASURE, erasure.run_id) == {"dag_run": 0, "task_instance": 0, "xcom": 0}

    # What stays: another DAG's run with its logs, a queued run of the DAG and its trigger's row.
    assert run_rows(OTHER_DAG, other.run_id) == other_before and files["other"].exists()
    assert run_rows(ERASURE, QUEUED_RUN)["dag_run"] == 1 and files["queued"].exists()
    assert [r for _e, r, _x in event_log(ERASURE)] == [QUEUED_RUN]
    assert run_rows(HOUSEKEEPING, dry.run_id)["dag_run"] == 1

    entries = [e for e in ledger.entries(limit=10) if e["action"] == "housekeeping"]
    assert ledger.count() == entries_before + 2 and len(entries) == 2
    assert [(e["run_id"], e["outcome"]) for e in entries] == [
        (real.run_id, "erased"),
        (dry.run_id, "planned"),
    ]
    assert entries[0]["detail"] == purged
    assert entries[0]["count"] == sum(purged["rows"].values()) + purged["log_files"]
    written = json.dumps(entries, default=str)
    assert not any(v in written for v in CANARIES) and erasure.run_id not in written
    assert ledger.verify_chain().ok


@pytest.mark.long  # a second DAG run; the first run's test stays in make test
def test_a_second_run_finds_nothing_left_and_says_so(hk_airflow: KWorld, airflow_db: Path) -> None:
    erasure = _erasure_dag(CUSTOMER)
    assert erasure.state == "success"
    first, _ = housekeeping(dry_run=False, keep="P0D")
    assert first.state == "success"

    again, counts = housekeeping(dry_run=False, keep="P0D")

    assert again.state == "success"
    assert (counts["runs"], counts["rows"], counts["log_files"], counts["verified"]) == (0, {}, 0, True)
    assert Ledger(hk_airflow.engine).verify_chain().ok
