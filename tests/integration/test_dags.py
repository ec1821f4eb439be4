"""Both DAGs end to end with ``dag.test()`` on the real services and the reference world.

Expectations come from the generator's ground truth and from reading the stores directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from harness.world_rules import NOW, TABLES
from harness.world_truth import Profile
from retention.ledger import Ledger
from retention.policy import load_policies
from retention.results import RunSummary
from retention.serde import from_json
from retention.stores import FILE_STORES
from retention_airflow.tasks import GROUP, erase_task_id
from tests.integration.conftest import POLICY_DIR, PSEUDONYM_KEY, WorldEnv
from tests.integration.test_engine_world import archive_files, s3_keys, table_ids

TOMBSTONE_CONN = json.dumps({"conn_type": "generic", "password": "test-tombstone-key-0123456789abcdef"})
"""Connection ``retention_tombstone_key``: the DAG tests' key of the tombstones."""


def _conn_json(engine: sa.Engine) -> str:
    url = engine.url
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "schema": url.database,
        }
    )


def relaxed_policies(tmp_path: Path) -> Path:
    """The shipped policies with caps opened up: these tests are about erasing, not approving."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in POLICY_DIR.glob("*.yaml"):
        if f.name.startswith("_"):  # settings (the customer-id format), not a category
            (folder / f.name).write_text(f.read_text())
            continue
        doc = yaml.safe_load(f.read_text())
        doc["cap"] = {"max_items": 10_000_000, "max_fraction": 1.0}
        (folder / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    return folder


@pytest.fixture
def airflow_world(
    world_env: WorldEnv, airflow_db: Any, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorldEnv]:
    """The world wired into Airflow through connections and the settings variable, as in production."""
    receipts = s3_server.create_bucket(f"receipts-{world_env.bucket[-12:]}")
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(world_env.engine))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETENTION_PSEUDONYM",
        json.dumps({"conn_type": "generic", "password": PSEUDONYM_KEY.decode()}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_TOMBSTONE_KEY", TOMBSTONE_CONN)
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(relaxed_policies(tmp_path)))
    monkeypatch.setenv(
        "AIRFLOW_VAR_RETENTION_SETTINGS",
        json.dumps(
            {
                "bucket_map": {"alleskar-documents": world_env.bucket},
                "archive_root": world_env.archive_root,
                "receipts_bucket": receipts,
            }
        ),
    )
    world_env.receipts_bucket = receipts  # type: ignore[attr-defined]
    yield world_env


def dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert not bag.import_errors
    return bag.dags[dag_id]


def test_nightly_run_erases_exactly_the_due_data(airflow_world: WorldEnv) -> None:
    env = airflow_world
    before = table_ids(env)
    expected = env.world.expected_after_nightly()
    run = dag("retention_nightly").test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    assert run.state == "success", run.state
    after = table_ids(env)
    for table in TABLES:
        assert after[table] == before[table] - expected[table]["deleted"], table
    assert not (env.world.s3_keys_expected_gone() & set(s3_keys(env)))
    assert not (env.world.archive_paths_expected_gone() & archive_files(env))
    assert Ledger(env.engine).verify_chain().ok
    policies = load_policies(Path(os.environ["RETENTION_POLICY_DIR"]))
    in_force = Ledger(env.engine).approved_policy_set()
    assert in_force == policies.hash, "the first real run puts its set in force"
    assert_unused_stores_skipped(run)


def assert_unused_stores_skipped(run: Any) -> None:
    """A category's erase task of a file store it does not use was skipped, not run; the others ran."""
    policies = load_policies(Path(os.environ["RETENTION_POLICY_DIR"]))
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    expected = {
        (f"{GROUP}.{erase_task_id(store)}", index): (
            "success" if store in policies.get(category).stores() else "skipped"
        )
        for index, category in enumerate(_xcom(run, "prepare_run"))
        for store in FILE_STORES
    }
    assert {key: states.get(key) for key in expected} == expected
    assert {"success", "skipped"} <= set(expected.values())


def _xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.long  # two whole nightly runs; test_engine_world checks a second run in process
def test_second_nightly_run_erases_nothing_and_says_so(airflow_world: WorldEnv) -> None:
    env = airflow_world
    nightly = dag("retention_nightly")
    assert nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()}).state == "success"
    after_first = table_ids(env)
    second = nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    assert second.state == "success"
    assert table_ids(env) == after_first
    summary = from_json(RunSummary, _xcom(second, "finish_nightly"))
    assert summary.totals.erased == 0 and summary.totals.anonymised == 0 and summary.proof.chain_ok
    # What is found again is only what legal holds keep.
    assert 0 < summary.totals.located <= summary.totals.kept
    ledger = Ledger(env.engine)
    assert any(e["outcome"] == "summary" and e["count"] == 0 for e in ledger.entries(run_id=second.run_id))


def test_dry_run_plans_and_touches_nothing(airflow_world: WorldEnv) -> None:
    env = airflow_world
    before = (table_ids(env), s3_keys(env), archive_files(env))
    ledger_before = Ledger(env.engine).count()
    run = dag("retention_nightly").test(run_conf={"dry_run": True, "as_of": NOW.isoformat()})
    assert run.state == "success"
    assert (table_ids(env), s3_keys(env), archive_files(env)) == before
    assert Ledger(env.engine).count() == ledger_before + 1  # only the run summary
    summary = from_json(RunSummary, _xcom(run, "finish_nightly"))
    expected = env.world.expected_after_nightly()
    due_rows = sum(len(e["deleted"]) + len(e["anonymised"]) for e in expected.values())
    assert summary.dry_run and summary.totals.erased == 0
    assert summary.totals.located >= due_rows


def test_customer_erasure_dag_erases_the_customer_and_writes_the_receipt(airflow_world: WorldEnv) -> None:
    env, world = airflow_world, airflow_world.world
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["invoices"]
    )
    inv = world.customer_inventory(cid)
    before = table_ids(env)
    conf = {
        "customer_id": str(cid),
        "request_ref": "PR-2026-00042",
        "reason": "erasure_request",
        "dry_run": False,
    }
    run = dag("customer_erasure").test(run_conf=conf)
    assert run.state == "success"
    after = table_ids(env)
    for table in ("contact_persons", "translation_jobs", "documents", "correspondence"):
        assert after[table] == before[table] - inv.rows[table], table
    assert inv.rows["invoices"] <= after["invoices"]
    assert not (set(inv.s3_objects) & set(s3_keys(env)))
    assert not (inv.archive_paths & archive_files(env))

    receipt = _xcom(run, "write_receipt")
    assert receipt["verified"] and receipt["request_ref"] == "PR-2026-00042"
    assert receipt["subject_ref"].startswith("psn:") and "customer_id" not in json.dumps(receipt)
    invoices = next(c for c in receipt["categories"] if c["category"] == "invoices")
    assert invoices["kept"][0]["count"] == len(inv.rows["invoices"])
    assert "Bogføringsloven" in invoices["kept"][0]["law"] and invoices["kept"][0]["until"] > "2026-06-15"
    docs = next(c for c in receipt["categories"] if c["category"] == "translation_documents")
    assert docs["erased"] == sum(inv.s3_objects.values()) + len(inv.archive_paths) + len(
        inv.rows["documents"]
    )
    stored = env.s3_client.get_object(Bucket=env.receipts_bucket, Key=receipt["location"]["json_key"])  # type: ignore[attr-defined]
    assert json.loads(stored["Body"].read())["totals"] == receipt["totals"]
    markdown = env.s3_client.get_object(Bucket=env.receipts_bucket, Key=receipt["location"]["markdown_key"])  # type: ignore[attr-defined]
    text = markdown["Body"].read().decode()
    assert "PR-2026-00042" in text and "Bogføringsloven" in text
    canaries = world.canaries(cid)
    assert canaries.name not in text and canaries.email not in text


class _Webhook:
    """A local HTTP endpoint that records what the alert notifier posts."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def conn_json(self) -> str:
        host, port = self.server.server_address[:2]
        return json.dumps({"conn_type": "http", "host": str(host), "port": port, "schema": "http"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.long  # the fault suite (make test-faults) covers SFTP drops, one of them in make test
def test_sftp_outage_mid_run_fails_loudly_alerts_ops_and_a_rerun_completes(
    airflow_world: WorldEnv, sftp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.adapters.sftp import SftpAdapter

    env = airflow_world
    hook = _Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_ALERTS", hook.conn_json)
    nightly = dag("retention_nightly")
    for t in nightly.tasks:
        t.retries = 0  # the outage must surface now, not after the production backoff
    monkeypatch.setattr(SftpAdapter.__init__, "__kwdefaults__", {"batch_size": 5})
    real_erase = SftpAdapter.erase

    def erase_then_outage(self: SftpAdapter, target: Any, batch: Any) -> Any:
        outcome = real_erase(self, target, batch)
        sftp_server.stop()  # the archive goes away after the first batch
        return outcome

    monkeypatch.setattr(SftpAdapter, "erase", erase_then_outage)
    expected_gone = env.world.archive_paths_expected_gone()
    try:
        failed = nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    finally:
        monkeypatch.setattr(SftpAdapter, "erase", real_erase)
        sftp_server.start()
    assert failed.state == "failed"
    left = expected_gone & archive_files(env)
    assert 0 < len(left) < len(expected_gone), "the outage hit in the middle of the erasure"
    assert table_ids(env)["documents"] >= env.world.expected_after_nightly()["documents"]["deleted"], (
        "document rows stay while their archive files are not proven gone"
    )
    assert any(b["dag_id"] == "retention_nightly" and b["task_id"] for b in hook.bodies), "ops were alerted"
    alerts = json.dumps(hook.bodies)
    for cid in list(env.world.held_customers)[:3] + [1, 2, 3]:
        assert env.world.canaries(cid).name not in alerts

    rerun = nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    hook.close()
    assert rerun.state == "success"
    assert not (expected_gone & archive_files(env))
    ledger = Ledger(env.engine)
    erased = sum(
        n
        for run_id in (failed.run_id, rerun.run_id)
        for (cat, store, outcome), n in ledger.outcomes_for_run(run_id).items()
        if cat == "translation_documents" and store == "sftp" and outcome == "erased"
    )
    assert erased == len(expected_gone), "every archive file is recorded as erased exactly once"
    assert ledger.verify_chain().ok


def _business_dump(env: WorldEnv) -> str:
    meta = sa.MetaData()
    meta.reflect(env.engine)
    chunks = []
    with env.engine.connect() as c:
        for table in meta.sorted_tables:
            chunks.extend(repr(tuple(row)) for row in c.execute(sa.select(table)))
    return "\n".join(chunks)


def _s3_dump(env: WorldEnv, bucket: str) -> bytes:
    chunks = []
    for page in env.s3_client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            body = env.s3_client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])[
                "Body"
            ].read()
            chunks += [v["Key"].encode(), body]
    return b"\n".join(chunks)


def _tree_dump(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def _metadata_dump(airflow_home: Path) -> bytes:
    import sqlite3

    chunks = []
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):  # noqa: S608 - table names from sqlite_master
                chunks.append(repr(row).encode())
    return b"\n".join(chunks)


def test_after_erasure_the_customer_is_nowhere(
    airflow_world: WorldEnv, airflow_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env, world = airflow_world, airflow_world.world
    cid = next(
        c for c in world.customers_with(Profile.DORMANT) if world.customer_inventory(c).rows["invoices"]
    )
    canary = world.canaries(cid)
    values = [canary.name, canary.email, canary.phone, canary.phrase]
    assert any(v in _business_dump(env) for v in values), "the canaries are there before"
    conf = {
        "customer_id": str(cid),
        "request_ref": "PR-2026-00077",
        "reason": "erasure_request",  # a withdrawn consent acts on consent data only (test_request_scope)
        "dry_run": False,
    }
    run = dag("customer_erasure").test(run_conf=conf)
    assert run.state == "success"
    logs = capfd.readouterr()
    places: dict[str, bytes] = {
        "business database and ledger": _business_dump(env).encode(),
        "document bucket (all versions)": _s3_dump(env, env.bucket),
        "receipts bucket": _s3_dump(env, env.receipts_bucket),  # type: ignore[attr-defined]
        "SFTP archive": _tree_dump(Path(env.archive_root)),
        "Airflow metadata DB": _metadata_dump(airflow_db),
        "task logs (files)": _tree_dump(airflow_db / "logs") if (airflow_db / "logs").exists() else b"",
        "task logs (output)": (logs.out + logs.err).encode(),
    }
    assert len(places["task logs (output)"]) > 1000, "the run's logs were captured"
    for where, content in places.items():
        for value in values:
            assert value.encode() not in content, f"{value[:3]}... found in {where}"


def test_a_run_id_another_run_used_is_refused_before_anything_is_touched(airflow_world: WorldEnv) -> None:
    """Airflow's run ids are unique within one DAG only: a customer's erasure that gets the id of a
    nightly run (the same trigger instant here; an id given through the REST API elsewhere) stops at
    its first task, so that the two runs never share ledger entries, leases or proof."""
    env, world = airflow_world, airflow_world.world
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["documents"]
    )
    at = NOW + timedelta(days=1)
    nightly = dag("retention_nightly").test(
        run_after=at, run_conf={"dry_run": True, "as_of": NOW.isoformat()}
    )
    assert nightly.state == "success"
    before = table_ids(env)
    conf = {
        "customer_id": str(cid),
        "request_ref": "PR-2026-00078",
        "reason": "erasure_request",
        "dry_run": False,
    }
    refused = dag("customer_erasure")
    for t in refused.tasks:
        t.retries = 0  # the final tasks find no run and fail; their retries would only wait
    erasure = refused.test(run_after=at, run_conf=conf)
    assert erasure.run_id == nightly.run_id, "the two runs got one id"
    assert erasure.state == "failed"
    states = {ti.task_id: ti.state for ti in erasure.get_task_instances()}
    assert states["prepare_run"] == "failed"
    assert table_ids(env) == before
    assert set(world.customer_inventory(cid).s3_objects) <= set(s3_keys(env))
    assert world.customer_inventory(cid).archive_paths <= archive_files(env)
    erasure_entries = [
        e for e in Ledger(env.engine).entries(run_id=nightly.run_id) if e.get("subject_ref") is not None
    ]
    assert erasure_entries == [], "nothing of the erasure reached the nightly run's ledger entries"
