"""A deployment with its own customer-id format (#11): customer numbers like ``K-00042``, as text.

The policy folder ``tests/fixtures/k_deployment/policies`` declares the format in ``_subject.yaml``
and two categories over a small schema (``schema.sql``) keyed by the text ``customer_no``: orders
with their lines (a child table) and a document per order in S3, and the customers themselves
with a folder each in the SFTP archive. Everything runs on the real services (PostgreSQL, moto's
S3 server, OpenSSH) through ``retention.flow``, the functions the DAG's tasks call.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.context import engine_context
from retention import flow
from retention.engine import RunContext
from retention.errors import TerminalError
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import PolicySet, load_policies
from retention.results import Reason

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "k_deployment"
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
KEY = b"k-deployment-test-key-0123456789abcdef"
REQUEST = flow.ReceiptRequest(request_ref="PR-2026-00777", reason="erasure_request")

CUSTOMERS = {
    "K-00042": ("Karen Kundesen", "karen@example.dk"),
    "K-00043": ("Kasper Kundesen", "kasper@example.dk"),
}
ORDERS = {1: "K-00042", 2: "K-00042", 3: "K-00043"}
LINES = {10: 1, 11: 1, 12: 2, 13: 3}
ARCHIVE = {
    "K-00042": ("contract.pdf", "letters/2025-01-02.txt"),
    "K-00043": ("contract.pdf",),
}


def s3_key(order: int) -> str:
    return f"orders/{ORDERS[order]}/{order}.pdf"


@dataclass
class KWorld:
    engine: Engine
    policies: PolicySet
    s3_client: Any
    bucket: str
    sftp_client: Any
    archive_root: str

    def context(self, subject: str | None, *, mode: str = "subject") -> RunContext:
        return engine_context(
            self.engine,
            self.policies,
            now=NOW,
            pseudonym_key=KEY,
            s3_client=self.s3_client,
            sftp_client=self.sftp_client,
            bucket=self.bucket,
            archive_root=self.archive_root,
            mode="subject" if mode == "subject" else "due",
            subject=subject,
        )

    def registry(self) -> HoldRegistry:
        return HoldRegistry(self.engine, subject_format=self.policies.subject)

    def state(self) -> dict[str, Any]:
        """What every store holds now: row keys per table, S3 versions per key, archive files."""
        with self.engine.connect() as c:
            tables = {
                "customers": set(c.execute(sa.text("SELECT customer_no FROM customers")).scalars()),
                "orders": set(c.execute(sa.text("SELECT id FROM orders")).scalars()),
                "order_lines": set(c.execute(sa.text("SELECT id FROM order_lines")).scalars()),
            }
        versions: dict[str, int] = {}
        for page in self.s3_client.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                versions[v["Key"]] = versions.get(v["Key"], 0) + 1
        files = set()
        for dirpath, _dirs, names in os.walk(self.archive_root):
            files |= {os.path.relpath(os.path.join(dirpath, n), self.archive_root) for n in names}
        return {**tables, "s3": versions, "archive": files}


def expected_state(customers: set[str]) -> dict[str, Any]:
    """The stores' state when exactly ``customers`` are left."""
    orders = {o for o, c in ORDERS.items() if c in customers}
    return {
        "customers": set(customers),
        "orders": orders,
        "order_lines": {line for line, o in LINES.items() if o in orders},
        "s3": {s3_key(o): 2 for o in orders},
        "archive": {f"customers/{c}/{f}" for c in customers for f in ARCHIVE[c]},
    }


def _fill_database(engine: Engine) -> None:
    statements = [s for s in (FIXTURE / "schema.sql").read_text().split(";") if s.strip()]
    with engine.begin() as c:
        for statement in statements:
            c.execute(sa.text(statement))
        for no, (name, email) in CUSTOMERS.items():
            c.execute(
                sa.text("INSERT INTO customers VALUES (:no, :name, :email, :at)"),
                {"no": no, "name": name, "email": email, "at": NOW - timedelta(days=30)},
            )
        for order, no in ORDERS.items():
            c.execute(
                sa.text("INSERT INTO orders VALUES (:id, :no, :at, :key)"),
                {"id": order, "no": no, "at": NOW - timedelta(days=60), "key": s3_key(order)},
            )
        for line, order in LINES.items():
            c.execute(
                sa.text("INSERT INTO order_lines VALUES (:id, :o, 'translation')"), {"id": line, "o": order}
            )


def _fill_archive(sftp_client: Any, archive_root: str) -> None:
    """Each customer's folder, written over SFTP."""
    for customer, files in ARCHIVE.items():
        for name in files:
            path = f"{archive_root}/customers/{customer}/{name}"
            directory = ""
            for part in path.split("/")[1:-1]:
                directory += "/" + part
                try:
                    sftp_client.stat(directory)
                except FileNotFoundError:
                    sftp_client.mkdir(directory)
            with sftp_client.open(path, "w") as f:
                f.write(f"archived for {customer}")


@pytest.fixture
def k_world(fresh_db: Engine, s3_server: Any, s3_client: Any, sftp_client: Any, archive_root: str) -> KWorld:
    _fill_database(fresh_db)
    letters = str.maketrans("0123456789", "ghijklmnop")
    bucket = s3_server.create_bucket("k-" + uuid.uuid4().hex[:16].translate(letters))
    for order in ORDERS:
        for version in (b"first", b"second"):
            s3_client.put_object(Bucket=bucket, Key=s3_key(order), Body=version)
    _fill_archive(sftp_client, archive_root)
    Ledger(fresh_db).ensure_schema()
    policies = load_policies(FIXTURE / "policies")
    world = KWorld(fresh_db, policies, s3_client, bucket, sftp_client, archive_root)
    world.registry().ensure_schema()
    assert world.state() == expected_state(set(CUSTOMERS)), "the world was not built as described"
    return world


def test_the_erasure_of_k_00042_erases_exactly_that_customer_in_every_store(k_world: KWorld) -> None:
    ctx = k_world.context("K-00042")

    outcome = flow.run_all(ctx, request=REQUEST)

    assert k_world.state() == expected_state({"K-00043"})
    receipt = outcome.receipt
    assert receipt is not None and receipt["verified"]
    erased = {c["category"]: c["erased"] for c in receipt["categories"]}
    # orders: 2 orders x 2 S3 versions, 3 lines, 2 order rows; customers: 2 archive files, 1 row
    assert erased == {"orders": 4 + 3 + 2, "customers": 2 + 1}
    ledger = Ledger(k_world.engine)
    assert ledger.verify_chain().ok
    written = repr(ledger.entries(limit=1000)) + repr(receipt)
    assert "K-00042" not in written and "00042" not in written and "Karen" not in written
    assert receipt["subject_ref"] == ctx.subject_ref and receipt["subject_ref"].startswith("psn:")


NOT_AN_ID = {
    "K-0042": "it does not match the format (e.g. K-00042)",
    "k-00042": "it has letters in the wrong case",
    " K-00042": "it has surrounding whitespace",
    "00042": "it does not match the format (e.g. K-00042)",
    "42": "it does not match the format (e.g. K-00042)",
}


@pytest.mark.parametrize(("subject", "problem"), NOT_AN_ID.items(), ids=[repr(s) for s in NOT_AN_ID])
def test_an_id_outside_the_format_is_refused_by_prepare_before_anything_is_touched(
    k_world: KWorld, subject: str, problem: str
) -> None:
    before = k_world.state()
    holds_checked: list[bool] = []
    expected = f"customer id must be the customer number, K- and five digits: {problem}"

    with pytest.raises(TerminalError) as refused:
        flow.prepare(k_world.context(subject), holds_check=lambda: holds_checked.append(True))
    assert str(refused.value) == expected  # the problem, in the format's words; never the value
    assert holds_checked == [], "the legal holds were read before the subject was checked"
    with pytest.raises(TerminalError) as refused_again:
        flow.run_all(k_world.context(subject), request=REQUEST)
    assert str(refused_again.value) == expected

    assert k_world.state() == before
    assert Ledger(k_world.engine).count() == 0
    # The same context with the customer's real id goes ahead: the refusal was the id's alone.
    assert flow.prepare(k_world.context("K-00042"), holds_check=lambda: holds_checked.append(True))
    assert holds_checked == [True]


def test_prepare_refuses_the_id_before_it_reads_the_database_schema(tmp_path: Path) -> None:
    """Without the policies' tables in the database, the id's error comes first; a valid id gets further."""
    empty = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        policies = load_policies(FIXTURE / "policies")

        def context(subject: str) -> RunContext:
            return engine_context(
                empty, policies, now=NOW, pseudonym_key=KEY, mode="subject", subject=subject
            )

        with pytest.raises(TerminalError, match="^customer id must be the customer number"):
            flow.prepare(context("k-00042"))
        with pytest.raises(TerminalError) as schema_error:
            flow.prepare(context("K-00042"))
        assert "customer id" not in str(schema_error.value)
        assert "orders" in str(schema_error.value) or "customers" in str(schema_error.value)
    finally:
        empty.dispose()


def test_a_hold_on_k_00042_keeps_all_their_data_and_the_other_customer_is_still_erased(
    k_world: KWorld,
) -> None:
    k_world.registry().add(reason="Retssag BS-1234/2026", subject="K-00042", now=NOW - timedelta(days=1))
    before = k_world.state()

    held = flow.run_all(k_world.context("K-00042"), request=REQUEST)

    assert k_world.state() == before
    kept = {(r.category, r.store): r.kept.get(Reason.LEGAL_HOLD, 0) for r in held.results}
    # two objects of two versions, two archive files, two orders, one customer: kept and said why
    assert kept == {
        ("orders", "s3"): 4,
        ("customers", "sftp"): 2,
        ("orders", "database"): 2,
        ("customers", "database"): 1,
    }
    assert all(r.erased == 0 for r in held.results)
    assert held.receipt is not None and held.receipt["totals"]["erased"] == 0

    flow.run_all(k_world.context("K-00043"), request=REQUEST)
    after = expected_state({"K-00042"})
    assert k_world.state() == after


@pytest.mark.parametrize("subject", ["00042", "k-00042", "K-0042", "42", " K-00042", "K-00042\n", "K_00042"])
def test_a_hold_on_a_subject_outside_the_format_is_refused_when_added(k_world: KWorld, subject: str) -> None:
    registry = k_world.registry()
    with pytest.raises(
        TerminalError, match="^hold subject must be the customer number, K- and five digits: it "
    ):
        registry.add(reason="Retssag BS-1234/2026", subject=subject, now=NOW)
    assert registry.list(include_inactive=True) == []
    assert registry.add(reason="Retssag BS-1234/2026", subject="K-00042", now=NOW) > 0


def test_a_hold_written_by_hand_outside_the_format_stops_the_run_before_anything_is_erased(
    k_world: KWorld,
) -> None:
    with k_world.engine.begin() as c:
        bad = c.execute(
            sa.text(
                "INSERT INTO retention_legal_holds (subject, reason, created_at) "
                "VALUES ('42', 'by hand', :at) RETURNING id"
            ),
            {"at": NOW - timedelta(days=1)},
        ).scalar_one()
    registry = k_world.registry()
    ctx = k_world.context("K-00043")
    categories = ctx.policies.ids
    before = k_world.state()
    with pytest.raises(
        TerminalError, match=f"^legal hold {bad} is invalid: its subject must be the customer"
    ):
        flow.prepare(ctx, holds_check=lambda: registry.check_stored(categories, NOW))
    with pytest.raises(TerminalError, match=f"^legal hold {bad} is invalid"):
        flow.run_all(ctx, request=REQUEST)  # run_all has no holds_check: the holds read before erasing fail
    assert k_world.state() == before


# -- the same deployment through the customer_erasure DAG (dag.test, the tasks of retention_airflow) ----


@pytest.fixture
def k_airflow(k_world: KWorld, airflow_db: Any, s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> KWorld:
    """The K world wired into Airflow through connections and the settings variable, as in production."""
    import json

    from tests.integration.test_dags import TOMBSTONE_CONN, _conn_json

    letters = str.maketrans("0123456789", "ghijklmnop")
    receipts = s3_server.create_bucket("k-receipts-" + uuid.uuid4().hex[:12].translate(letters))
    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(k_world.engine))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETENTION_PSEUDONYM", json.dumps({"conn_type": "generic", "password": KEY.decode()})
    )
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_TOMBSTONE_KEY", TOMBSTONE_CONN)
    monkeypatch.setenv("RETENTION_POLICY_DIR", str(FIXTURE / "policies"))
    settings = {
        "bucket_map": {"alleskar-documents": k_world.bucket},
        "archive_root": k_world.archive_root,
        "receipts_bucket": receipts,
    }
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps(settings))
    return k_world


def _erasure_dag(customer_id: str) -> Any:
    from tests.integration.test_dags import dag

    erasure = dag("customer_erasure")
    for t in erasure.tasks:
        t.retries = 0  # a refusal must end the run now, not after the production backoff
    conf = {"customer_id": customer_id, "request_ref": "PR-2026-00777", "reason": "erasure_request"}
    return erasure.test(run_conf={**conf, "dry_run": False})


def _task_states(run: Any) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in tis if ti.map_index in (-1, 0)}


def test_the_customer_erasure_dag_erases_k_00042_in_its_deployment(k_airflow: KWorld) -> None:
    run = _erasure_dag("K-00042")
    assert run.state == "success", _task_states(run)
    assert k_airflow.state() == expected_state({"K-00043"})
    assert Ledger(k_airflow.engine).verify_chain().ok


def test_the_dag_s_first_task_refuses_an_id_the_trigger_form_accepted(
    k_airflow: KWorld, capfd: pytest.CaptureFixture[str]
) -> None:
    before = k_airflow.state()
    run = _erasure_dag("k-00042")  # in the generic alphabet, so the Param schema lets it through
    assert run.state == "failed"
    assert _task_states(run)["prepare_run"] == "failed"
    out, err = capfd.readouterr()
    refusal = "customer_id must be the customer number, K- and five digits: it has letters in the wrong case"
    assert refusal in out + err
    assert k_airflow.state() == before
    assert Ledger(k_airflow.engine).count() == 0
