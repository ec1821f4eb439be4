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
from retention.ledger import Ledger
from retention.locks import Leases
from retention.pseudonym import pseudonymise
from retention_airflow import clients
from tests.integration.api_server import serialize_dags
from tests.integration.conftest import PSEUDONYM_KEY
from tests.integration.faults import worker
from tests.integration.faults.conftest import (
    NIGHTLY_CONF,
    Faulty,
    assert_nightly_end_state,
    assert_untouched,
    ledger_totals,
    snapshot,
)
from tests.integration.test_engine_world import archive_files, s3_keys, table_ids


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


@pytest.mark.faults
def test_the_nightly_run_and_a_customers_erasure_started_together_take_turns(faulty: Faulty) -> None:
    """Two DAG runs at once, each in a worker process of its own, on the rows of one customer."""
    f = faulty
    world = f.env.world
    due = world.expected_after_nightly()
    cid = next(
        c
        for c in world.customers_with(Profile.MIXED)
        if world.customer_inventory(c).rows["documents"] - due["documents"]["deleted"]
        and world.customer_inventory(c).rows["correspondence"] & due["correspondence"]["deleted"]
    )  # some of its rows due tonight, some only by the request
    inv = world.customer_inventory(cid)
    when = datetime.now(UTC).replace(microsecond=0)
    request = {
        "customer_id": str(cid),
        "request_ref": "PR-2026-00078",
        "reason": "erasure_request",
        "dry_run": False,
    }

    serialize_dags()  # each dag.test() writes its DAGs' rows: two at once must find them there
    # One second apart: Airflow's run ids are made of the date, and the ledger tells runs by their id.
    both = [
        worker.start("retention_nightly", when, NIGHTLY_CONF),
        worker.start("customer_erasure", when + timedelta(seconds=1), request),
    ]
    (nightly_rc, nightly, out_n), (erasure_rc, erasure, out_e) = [worker.finish(p) for p in both]

    assert nightly_rc == 0 and nightly is not None and nightly["state"] == "success", out_n[-3000:]
    assert erasure_rc == 0 and erasure is not None and erasure["state"] == "success", out_e[-3000:]
    after = table_ids(f.env)
    for table, ids in f.before.rows.items():
        nightly_gone = due[table]["deleted"]
        assert ids - nightly_gone - inv.rows[table] <= after[table], f"{table}: a row of neither was touched"
        assert not (after[table] & nightly_gone), f"{table}: a due row is left"
        if table in ("contact_persons", "translation_jobs", "documents", "correspondence"):
            assert after[table] == ids - nightly_gone - inv.rows[table], table
    gone = world.s3_keys_expected_gone() | set(inv.s3_objects)
    assert s3_keys(f.env) == {k: n for k, n in f.before.versions.items() if k not in gone}
    files_gone = world.archive_paths_expected_gone() | inv.archive_paths
    assert archive_files(f.env) == f.before.files - files_gone
    totals = ledger_totals(f.env, [nightly["run_id"], erasure["run_id"]])
    assert totals["s3"] == sum(f.before.versions[k] for k in gone), "every version, once over both runs"
    assert totals["sftp"] == len(files_gone), "every archive file, once over both runs"
    deleted = sum(len(ids - after[t]) for t, ids in f.before.rows.items())
    erased_rows = sum(
        n
        for run_id in (nightly["run_id"], erasure["run_id"])
        for (_c, store, outcome), n in Ledger(f.env.engine).outcomes_for_run(run_id).items()
        if store == "database" and outcome == "erased"
    )
    assert erased_rows == deleted, "every deleted row, once over both runs"
    assert Ledger(f.env.engine).verify_chain().ok
    assert Leases(f.env.engine).held() == [], "both gave their leases back"
