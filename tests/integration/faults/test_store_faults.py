"""Faults of the three stores during the nightly run, on the real services through fault proxies.

Each test: the fault hits a real ``retention_nightly`` run; the test checks what the run did
(failed and alerted, or absorbed the fault), heals the fault, runs again where a human would,
and then checks the end state over all runs (``assert_nightly_end_state``).

Tests marked ``faults`` run in ``make test-faults`` only; the unmarked ones are the
representative subset that ``make test`` runs too.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from harness.faultproxy import wait_for
from retention.ledger import Ledger
from tests.integration.faults.conftest import Faulty, assert_nightly_end_state, assert_untouched, snapshot
from tests.integration.test_engine_world import s3_keys, table_ids


def _failed_then_rerun(f: Faulty, failed: Any) -> list[str]:
    """The failed run alerted; after healing, a second run succeeds. Both run ids."""
    assert failed.state == "failed"
    assert f.alerted(), "ops were alerted"
    f.heal()
    rerun = f.nightly()
    assert rerun.state == "success"
    return [failed.run_id, rerun.run_id]


def test_s3_errors_beyond_the_clients_retries_fail_the_run_and_a_rerun_completes(faulty: Faulty) -> None:
    f = faulty
    f.s3.fail("DeleteObjects", status=500, code="InternalError", times=10_000)
    failed = f.nightly()
    assert f.s3.failed["DeleteObjects"] > 1, "the client retried before giving up"
    assert f.env.world.s3_keys_expected_gone() & set(f.before.versions), "due versions were there"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


@pytest.mark.faults
def test_s3_throttling_within_the_clients_retries_is_absorbed(faulty: Faulty) -> None:
    f = faulty
    f.s3.fail("ListObjectVersions", status=503, code="SlowDown", times=2)
    f.s3.fail("DeleteObjects", status=503, code="SlowDown", times=2)
    run = f.nightly()
    assert run.state == "success"
    assert f.s3.failed["ListObjectVersions"] == 2 and f.s3.failed["DeleteObjects"] == 2
    assert not f.alerted()
    assert_nightly_end_state(f, [run.run_id])


@pytest.mark.faults
def test_per_key_delete_errors_keep_those_files_rows_and_a_rerun_completes(faulty: Faulty) -> None:
    f = faulty
    gone = sorted(f.env.world.s3_keys_expected_gone())
    failing = gone[0].rsplit("/", 1)[0] + "/"  # one due document's folder: its versions fail
    f.s3.fail_keys("^" + failing.replace(".", r"\."))
    failed = f.nightly()
    assert f.s3.key_errors > 0
    still = {k for k in gone if k.startswith(failing)}
    assert still and still <= set(s3_keys(f.env)), "the versions that failed to delete are still there"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


@pytest.mark.faults
def test_a_database_commit_whose_answer_was_lost_is_counted_once_by_the_retry(faulty: Faulty) -> None:
    f = faulty
    # The first deleting transaction's COMMIT reaches the server; its answer never comes back.
    f.db.drop_when_sent(b"COMMIT", armed_by=b"DELETE FROM contact_persons", deliver=True)
    run = f.nightly(retried="erase_databases")
    assert f.db.triggered.is_set(), "the commit's answer was lost"
    assert run.state == "success", "Airflow's retry resumed the database pass in the same run"
    reconciled = [
        e
        for e in Ledger(f.env.engine).entries(run_id=run.run_id, limit=1000)
        if e["store"] == "database" and (e.get("detail") or {}).get("reconciled")
    ]
    assert reconciled and all(e["count"] > 0 for e in reconciled), (
        "the committed batch is counted by the retry, from the erase journal"
    )
    assert_nightly_end_state(f, [run.run_id])


@pytest.mark.faults
def test_the_business_database_connection_dropped_mid_batch(faulty: Faulty) -> None:
    f = faulty
    f.db.drop_when_sent(b"DELETE FROM", nth=2, then_refuse=True)
    failed = f.nightly()
    assert f.db.triggered.is_set(), "the connection dropped at the second delete"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


@pytest.mark.faults
def test_a_postgresql_backend_terminated_mid_delete(faulty: Faulty, pg_server: Any) -> None:
    """A row of a due batch is locked by another session; the run's DELETE waits on it and its
    backend is terminated (an administrator, a failover); the run fails, the rerun completes."""
    f = faulty
    due = sorted(f.env.world.expected_after_nightly()["correspondence"]["deleted"])
    dsn = f"host=127.0.0.1 port={pg_server.port} dbname={f.env.engine.url.database} user=postgres"
    killed = threading.Event()
    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as admin:
        locker.execute("SELECT id FROM correspondence WHERE id = %s FOR UPDATE", [due[-1]])

        def terminate_the_waiting_delete() -> None:
            def waiting() -> list[Any]:
                return admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE 'DELETE FROM%%correspondence%%'"
                ).fetchall()

            wait_for(lambda: bool(waiting()), timeout=300)
            for (pid,) in waiting():
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            killed.set()

        watcher = threading.Thread(target=terminate_the_waiting_delete, daemon=True)
        watcher.start()
        failed = f.nightly()
        watcher.join(timeout=5)
        locker.rollback()
    assert killed.is_set(), "the DELETE waited on the lock and its backend was terminated"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


def test_the_sftp_connection_dropped_mid_erasure_is_resumed_and_counted_once(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops while a batch is being erased: the server removed some of its files,
    the outcome never reached the ledger. Airflow's retry resumes the step in the same run, and the
    files the stopped attempt removed are recorded as erased by it (intent before, outcome after)."""
    from retention.adapters.sftp import SftpAdapter

    f = faulty
    # Small batches on a slow line, so that the drop lands in the middle of the erasure.
    monkeypatch.setattr(SftpAdapter.__init__, "__kwdefaults__", {"batch_size": 5})
    f.sftp.slow(0.02)
    due = f.env.world.archive_paths_expected_gone()
    root = f.env.archive_root
    dropped = threading.Event()

    def present() -> int:
        return sum(os.path.exists(os.path.join(root, p)) for p in due)

    def drop_once_some_are_gone() -> None:
        wait_for(lambda: present() < len(due), timeout=300)
        f.sftp.drop()
        dropped.set()

    watcher = threading.Thread(target=drop_once_some_are_gone, daemon=True)
    watcher.start()
    run = f.nightly(retried="category.erase_sftp")
    watcher.join(timeout=5)
    assert dropped.is_set() and run.state == "success"
    tries = [ti.try_number for ti in run.get_task_instances() if ti.task_id == "category.erase_sftp"]
    assert max(tries) == 2, "one try was cut off and resumed"
    reconciled = [
        e
        for e in Ledger(f.env.engine).entries(run_id=run.run_id, limit=1000)
        if (e["detail"] or {}).get("reconciled")
    ]
    assert reconciled and all(e["store"] == "sftp" for e in reconciled)
    assert_nightly_end_state(f, [run.run_id])


@pytest.mark.faults
def test_the_ledger_database_unreachable_at_the_first_intent_erases_nothing(faulty: Faulty) -> None:
    """Intent is written before an item is erased: with the ledger gone, nothing is erased."""
    f = faulty
    f.ledger.drop_when_sent(b"planned", then_refuse=True)
    failed = f.nightly()
    assert f.ledger.triggered.is_set()
    assert_untouched(f)  # nothing was erased without its intent in the ledger
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


def _settings(f: Faulty, monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """The run's ``retention_settings`` with ``values`` changed (time limits of the stores)."""
    current = json.loads(os.environ["AIRFLOW_VAR_RETENTION_SETTINGS"])
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps({**current, **values}))


@pytest.mark.faults
def test_a_delete_stalled_on_a_lock_gives_up_at_the_lock_timeout(
    faulty: Faulty, pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A business transaction holds a due row; the run's DELETE waits at most ``lock_timeout``."""
    f = faulty
    _settings(f, monkeypatch, lock_timeout=1)
    due = sorted(f.env.world.expected_after_nightly()["correspondence"]["deleted"])
    dsn = f"host=127.0.0.1 port={pg_server.port} dbname={f.env.engine.url.database} user=postgres"
    with psycopg.connect(dsn) as locker:
        locker.execute("SELECT id FROM correspondence WHERE id = %s FOR UPDATE", [due[0]])
        failed = f.nightly()
        locker.rollback()
    assert any(
        ti.task_id == "erase_databases" and ti.state == "failed" for ti in failed.get_task_instances()
    ), "the database pass failed instead of waiting for ever"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


@pytest.mark.faults
def test_a_stalled_sftp_server_fails_the_step_at_its_timeout(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faulty
    _settings(f, monkeypatch, sftp_timeout=2)
    f.sftp.stall()
    failed = f.nightly()
    f.sftp.stall(False)
    assert f.env.world.archive_paths_expected_gone() <= snapshot(f.env).files, "nothing erased while stalled"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))


@pytest.mark.faults
def test_policy_files_changed_between_plan_and_erase_stop_the_later_steps(faulty: Faulty) -> None:
    f = faulty
    folder = Path(os.environ["RETENTION_POLICY_DIR"])
    policy = folder / "correspondence.yaml"

    def change_once_the_first_store_is_erased() -> None:
        wait_for(lambda: f.s3.counts["DeleteObjects"] > 0, timeout=300)
        doc = yaml.safe_load(policy.read_text())
        doc["rationale"] = doc["rationale"] + " Changed during the run."
        policy.write_text(yaml.safe_dump(doc, allow_unicode=True))

    watcher = threading.Thread(target=change_once_the_first_store_is_erased, daemon=True)
    watcher.start()
    failed = f.nightly()
    watcher.join(timeout=5)
    refused = [ti.task_id for ti in failed.get_task_instances() if ti.state == "failed"]
    assert "erase_databases" in refused, "a step after the change refused to act under other policies"
    assert table_ids(f.env) == f.before.rows, "no row was erased under the changed policies"
    assert_nightly_end_state(f, _failed_then_rerun(f, failed))
