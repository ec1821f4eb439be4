"""A worker killed at a named point (``retention.failpoints``), and the run resumed in the same run.

The nightly run goes in a child process that kills itself (SIGKILL: no cleanup, no ledger flush)
at the point; then, as Airflow's scheduler does with a task whose worker stopped heartbeating,
the test marks the lost task failed and the same DAG run goes on (its tasks cleared and run
again). The resumed steps find the killed attempt's announced batches without an outcome and
count what it erased exactly once: from the erase journal for the database (the rows committed
with their journal row), from the intent notes for files.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from typing import Any

import pytest

from retention.journal import EraseJournal, unfinished_ranges
from retention.ledger import MAX_PAGE, Ledger
from tests.integration.faults import worker
from tests.integration.faults.conftest import NIGHTLY_CONF, Faulty, assert_nightly_end_state

KILLED = -signal.SIGKILL


def fail_lost_tasks(dag_id: str, logical_date: datetime) -> list[str]:
    """What the scheduler does for a worker that stopped heartbeating: its running tasks fail."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id, logical_date=logical_date).one()
        lost = session.query(TaskInstance).filter_by(
            dag_id=dag_id, run_id=run.run_id, state=TaskInstanceState.RUNNING
        )
        names = [ti.task_id for ti in lost]
        lost.update({"state": TaskInstanceState.FAILED}, synchronize_session=False)
    return names


def killed_at(f: Faulty, point: str) -> tuple[datetime, list[dict[str, Any]]]:
    """Run the nightly run in a child killed at ``point``; its logical date and ledger entries."""
    when = datetime.now(UTC).replace(microsecond=0)
    rc, run, out = worker.finish(
        worker.start("retention_nightly", when, NIGHTLY_CONF, RETENTION_KILL_AT=point)
    )
    assert rc == KILLED, f"the worker was killed at {point}: {out[-3000:]}"
    assert run is None, "the killed run never finished"
    assert fail_lost_tasks("retention_nightly", when), "a task was running when the worker died"
    return when, every_entry(f)


def every_entry(f: Faulty, run_id: str | None = None) -> list[dict[str, Any]]:
    """The ledger's entries (of one run), oldest first."""
    ledger, out = Ledger(f.env.engine), []
    while page := ledger.entries(run_id=run_id, offset=len(out), limit=MAX_PAGE):
        out.extend(page)
    return out[::-1]


def _reconciled(entries: list[dict[str, Any]], store: str) -> int:
    return sum(
        e["count"]
        for e in entries
        if e["store"] == store and isinstance(e.get("detail"), dict) and e["detail"].get("reconciled")
    )


def test_killed_after_a_database_batch_committed_the_resumed_run_counts_it_once(faulty: Faulty) -> None:
    f = faulty
    when, entries = killed_at(f, "after_erase:database")
    run_id = entries[-1]["run_id"]
    lost = unfinished_ranges([e for e in entries if e["run_id"] == run_id])
    assert lost, "a database batch was announced and its outcome never reached the ledger"
    committed = {
        batch: did
        for category in {e["category"] for e in entries if e["run_id"] == run_id}
        for batch, did in EraseJournal(f.env.engine).of(run_id, category, lost).items()
    }
    assert committed and sum(d.erased + d.anonymised for d in committed.values()) > 0, (
        "its rows are gone: the journal row committed with them"
    )

    resumed = f.nightly(logical_date=when)
    assert resumed.state == "success"
    assert resumed.run_id == run_id, "the same run went on"
    after = every_entry(f, run_id)
    assert _reconciled(after, "database") == sum(d.erased + d.anonymised for d in committed.values())
    assert_nightly_end_state(f, [run_id])


@pytest.mark.faults
@pytest.mark.parametrize("point", ["after_erase:s3", "after_erase:sftp"])
def test_killed_after_a_file_batch_was_erased_the_resumed_run_counts_it_once(
    faulty: Faulty, point: str
) -> None:
    f = faulty
    when, entries = killed_at(f, point)
    run_id = entries[-1]["run_id"]
    resumed = f.nightly(logical_date=when)
    assert resumed.state == "success" and resumed.run_id == run_id
    store = point.split(":")[1]
    after = every_entry(f, run_id)
    assert _reconciled(after, store) > 0, "the killed attempt's batch is counted as erased by it"
    assert_nightly_end_state(f, [run_id])


@pytest.mark.faults
def test_killed_between_the_file_stores_and_the_database_pass(faulty: Faulty) -> None:
    f = faulty
    when, entries = killed_at(f, "before_database_pass")
    run_id = entries[-1]["run_id"]
    assert not [e for e in entries if e["run_id"] == run_id and e["store"] == "database" and e["count"]], (
        "the database pass had not begun"
    )
    resumed = f.nightly(logical_date=when)
    assert resumed.state == "success" and resumed.run_id == run_id
    assert_nightly_end_state(f, [run_id])
