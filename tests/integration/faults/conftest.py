"""The fault suite's world: the reference world wired into Airflow through fault proxies.

Every store is reached through a proxy the test controls (``harness.faultproxy``): the
business database and the ledger's database (the same PostgreSQL server, each through its own
proxy and connection), S3 and the SFTP archive. The runs are the real DAGs under
``dag.test()``; retries are off so that each fault surfaces in the run it hits, and the test
runs the DAG again as the operator (or Airflow's retry) would.

``assert_nightly_end_state`` is the verdict every fault must end in, after its re-runs: no
due item left, no item that was not due touched, the ledger's counts equal to what was
really erased (exactly once over all the runs), the chain intact.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from harness.faultproxy import S3FaultProxy, TcpFaultProxy
from harness.world_rules import NOW, TABLES
from retention.ledger import Ledger
from retention_airflow import clients
from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import _Webhook, airflow_world, dag  # noqa: F401 - the fixture
from tests.integration.test_engine_world import archive_files, s3_keys, table_ids

NIGHTLY_CONF = {"dry_run": False, "as_of": NOW.isoformat()}


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, set[int]]
    versions: dict[str, int]
    """S3 key -> versions and delete markers."""
    files: set[str]


def snapshot(env: WorldEnv) -> Snapshot:
    return Snapshot(table_ids(env), s3_keys(env), archive_files(env))


@dataclass
class Faulty:
    env: WorldEnv
    db: TcpFaultProxy
    """The business database."""
    ledger: TcpFaultProxy
    """The ledger's database (connection ``retention_ledger``)."""
    s3: S3FaultProxy
    sftp: TcpFaultProxy
    alerts: _Webhook
    before: Snapshot

    def nightly(self, *, retried: str | None = None, logical_date: datetime | None = None) -> Any:
        """One run of ``retention_nightly`` at the world's moment; its DagRun. Retries are off, but
        for the task ``retried`` (one retry at once: Airflow resuming the step in the same run).
        With ``logical_date`` of a run that exists, that run goes on (its tasks cleared and run again)."""
        nightly = dag("retention_nightly")
        for t in nightly.tasks:
            t.retries = 1 if t.task_id == retried else 0
            if t.task_id == retried:
                t.retry_delay = timedelta(0)
                t.retry_exponential_backoff = False
        if logical_date is not None:
            return nightly.test(run_after=logical_date, logical_date=logical_date, run_conf=NIGHTLY_CONF)
        return nightly.test(run_conf=NIGHTLY_CONF)

    def heal(self) -> None:
        for proxy in (self.db, self.ledger, self.s3, self.sftp):
            proxy.heal()

    def alerted(self, dag_id: str = "retention_nightly") -> list[dict[str, Any]]:
        return [b for b in self.alerts.bodies if b.get("dag_id") == dag_id]


def _pg_conn(port: int, database: str) -> str:
    conn = {"host": "127.0.0.1", "port": port, "login": "postgres", "schema": database}
    return json.dumps({"conn_type": "postgres", **conn})


@pytest.fixture
def faulty(
    airflow_world: WorldEnv,  # noqa: F811 - the fixture imported above
    pg_server: Any,
    s3_server: Any,
    sftp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Faulty]:
    env = airflow_world
    database = env.engine.url.database or ""
    with (
        TcpFaultProxy("127.0.0.1", pg_server.port) as db,
        TcpFaultProxy("127.0.0.1", pg_server.port) as ledger,
        S3FaultProxy(s3_server.endpoint_url) as s3,
        TcpFaultProxy("127.0.0.1", sftp_server.port) as sftp,
    ):
        alerts = _Webhook()
        monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _pg_conn(db.port, database))
        monkeypatch.setenv("AIRFLOW_CONN_RETENTION_LEDGER", _pg_conn(ledger.port, database))
        s3_conn = json.loads(s3_server.airflow_conn_json())
        s3_conn["extra"]["endpoint_url"] = s3.endpoint_url
        monkeypatch.setenv("AIRFLOW_CONN_DOCS_S3", json.dumps(s3_conn))
        sftp_conn = json.loads(sftp_server.airflow_conn_json())
        sftp_conn["port"] = sftp.port
        monkeypatch.setenv("AIRFLOW_CONN_ARCHIVE_SFTP", json.dumps(sftp_conn))
        monkeypatch.setenv("AIRFLOW_CONN_RETENTION_ALERTS", alerts.conn_json)
        # A failed run whose ledger was unreachable could not give its leases back: they expire
        # after LEASE_TTL without a heartbeat. Seconds here, so that the re-run does not wait minutes.
        monkeypatch.setattr(clients, "LEASE_TTL", timedelta(seconds=3))
        try:
            yield Faulty(env, db, ledger, s3, sftp, alerts, snapshot(env))
        finally:
            alerts.close()


def assert_untouched(f: Faulty) -> None:
    """Every row, version and archive file is as before the run (compared one by one)."""
    now = snapshot(f.env)
    for table, ids in f.before.rows.items():
        assert now.rows[table] == ids, f"rows of {table} changed"
    assert now.versions == f.before.versions, "S3 versions changed"
    assert now.files == f.before.files, "archive files changed"


def ledger_totals(env: WorldEnv, run_ids: Sequence[str]) -> Counter[str]:
    """Per store: what the runs' ledger entries say was erased or anonymised."""
    ledger = Ledger(env.engine)
    totals: Counter[str] = Counter()
    for run_id in run_ids:
        for (_category, store, outcome), n in ledger.outcomes_for_run(run_id).items():
            if outcome in ("erased", "anonymised"):
                totals[store] += n
    return totals


def assert_nightly_end_state(f: Faulty, run_ids: Sequence[str]) -> None:
    """0 due items left, 0 not-due items touched, ledger counts exactly what was erased, chain intact."""
    env, world = f.env, f.env.world
    expected = world.expected_after_nightly()
    after = table_ids(env)
    for table in TABLES:
        assert after[table] == f.before.rows[table] - expected[table]["deleted"], table
    gone = world.s3_keys_expected_gone()
    assert s3_keys(env) == {k: n for k, n in f.before.versions.items() if k not in gone}
    assert archive_files(env) == f.before.files - world.archive_paths_expected_gone()
    totals = ledger_totals(env, run_ids)
    rows = sum(len(e["deleted"]) + len(e["anonymised"]) for e in expected.values())
    assert totals["database"] == rows, "every row erased or anonymised is in the ledger exactly once"
    assert totals["s3"] == sum(f.before.versions[k] for k in gone), "every version and marker, once"
    assert totals["sftp"] == len(world.archive_paths_expected_gone()), "every archive file, once"
    assert Ledger(env.engine).verify_chain().ok
