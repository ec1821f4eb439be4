"""Runs that overlap: they take turns through the leases (``retention.locks``), never interleave.

The other run is stood in for by its lease in the real lease table (the row a running erasure
holds); the DAG under test meets it as it would meet the other run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.world_truth import Profile
from retention.keyring import Keyring, period_of
from retention.locks import Leases
from retention.pseudonym import pseudonymise
from retention_airflow import clients
from tests.integration.conftest import PSEUDONYM_KEY
from tests.integration.faults.conftest import Faulty, assert_nightly_end_state, assert_untouched, snapshot
from tests.integration.test_engine_world import table_ids


@pytest.mark.faults
def test_a_second_erasure_of_a_customer_being_erased_stops_before_touching_anything(
    faulty: Faulty,
) -> None:
    f = faulty
    world = f.env.world
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["documents"]
    )
    inv = world.customer_inventory(cid)
    # The running erasure's lease: the customer's pseudonym under this year's key.
    Keyring(f.env.engine).ensure_schema()
    year_key = Keyring(f.env.engine, PSEUDONYM_KEY).key(period_of(datetime.now(UTC)))
    scope = f"subject:{pseudonymise(year_key, str(cid))}"
    leases = Leases(f.env.engine)
    leases.ensure_schema()
    leases.acquire(scope, "manual__the_first", "prepare_run", ttl=timedelta(hours=1))

    erasure = dag_test("customer_erasure", customer=cid)
    assert erasure.state == "failed"
    assert_untouched(f)
    assert f.alerted("customer_erasure")

    leases.release(scope, "manual__the_first")
    again = dag_test("customer_erasure", customer=cid)
    assert again.state == "success"
    after = table_ids(f.env)
    for table in ("contact_persons", "translation_jobs", "documents", "correspondence"):
        assert after[table] == f.before.rows[table] - inv.rows[table], table
    assert leases.held() == [], "the erasure gave its customer's lease back"


@pytest.mark.faults
def test_a_category_another_run_is_erasing_waits_its_turn_and_a_rerun_completes(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faulty
    monkeypatch.setattr(clients, "LEASE_WAIT", timedelta(seconds=1))
    leases = Leases(f.env.engine)
    leases.ensure_schema()
    held = "category:translation_documents"
    leases.acquire(held, "manual__another_run", "erase_databases", ttl=timedelta(hours=1))

    failed = f.nightly()
    assert failed.state == "failed"
    assert f.env.world.archive_paths_expected_gone() <= snapshot(f.env).files, (
        "nothing of the held category was erased"
    )
    assert table_ids(f.env) == f.before.rows, "the database pass waits for every category it erases"
    assert [lease.owner for lease in leases.held()] == ["manual__another_run"], "this run gave back its own"

    leases.release(held, "manual__another_run")
    rerun = f.nightly()
    assert rerun.state == "success"
    assert_nightly_end_state(f, [failed.run_id, rerun.run_id])


def dag_test(dag_id: str, *, customer: int) -> Any:
    from tests.integration.test_dags import dag

    erasure = dag(dag_id)
    for t in erasure.tasks:
        t.retries = 0
    conf = {"customer_id": str(customer), "request_ref": "PR-2026-00077", "reason": "erasure_request"}
    return erasure.test(run_conf={**conf, "dry_run": False})
