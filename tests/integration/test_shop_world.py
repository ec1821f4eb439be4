"""The second reference world, a web shop of another shape (#11 "Real schemas"), through both DAGs.

Customers are text customer numbers (``KN-0042-B``); addresses are rows referenced from customers
and from orders (NULL: a pickup), two customers share a home, an order ships to another customer's
home; order lines have no date (dated through their order, or in the basket without one); notes
have no date at all (on request only); invoices are kept by law; gift cards are redeemed on other
customers' orders; files are every version of the order confirmations in S3 (some behind a delete
marker), invoice PDFs and a folder per customer in the SFTP archive (``harness.shop_world``).

The world is generated into the real services (PostgreSQL, moto's S3 server, OpenSSH) and wired
into Airflow through connections and the settings variable. ``retention_nightly`` (as of the
world's clock) and ``customer_erasure`` (for a customer with a shared home, a pickup order and a
basket line, at the same clock) each run once for the module with ``dag.test()``, on a world of
their own. Every table row by row, every S3 version and delete marker and every archive file and
directory must then be what ``harness.shop_oracle`` derives from the README's rules, and so must
the counts the runs report (steps, run summary, receipt, ledger).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from harness.shop_oracle import Expected, expected
from harness.shop_world import NOW, POLICY_BUCKET, POLICY_DIR, TABLES, Mode, ShopWorld, generate, plan
from retention import cli
from retention.holds import HoldRegistry
from retention.keyring import Keyring, period_of
from retention.ledger import Ledger
from retention.policy import load_policies
from retention.results import CategoryPlan, DatabasePass, RunSummary, StepResult
from retention.serde import from_json

KEY = b"shop-world-pseudonym-key-0123456789"
REQUEST_REF = "PR-2026-00811"
_LETTERS = str.maketrans("0123456789", "ghijklmnop")
Counts = dict[tuple[str, str], Counter[str]]


@dataclass
class ShopRun:
    """One world after one DAG run: the stores to look at, the oracle's answer and the run's outputs."""

    world: ShopWorld
    expected: Expected
    engine: sa.Engine
    s3_client: Any
    bucket: str
    receipts_bucket: str
    archive_root: str
    run: Any
    result: dict[str, Any]
    """The last task's return value: the run summary, or the receipt."""
    steps: list[StepResult]

    def tables(self) -> dict[str, dict[Any, dict[str, Any]]]:
        with self.engine.connect() as c:
            return {
                table: {r[cols[0]]: dict(r) for r in c.execute(sa.text(f"SELECT * FROM {table}")).mappings()}  # noqa: S608 - our table names
                for table, cols in TABLES.items()
            }

    def objects(self) -> dict[str, list[tuple[str, bool]]]:
        """Every version and delete marker in the documents bucket, by key."""
        found: dict[str, list[tuple[str, bool]]] = {}
        for page in self.s3_client.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                for v in page.get(kind, []):
                    found.setdefault(v["Key"], []).append((v["VersionId"], marker))
        return {k: sorted(v) for k, v in found.items()}

    def archive(self) -> tuple[dict[str, bytes], set[str]]:
        """The archive's files (path -> content) and directories, read from the server's disk."""
        files: dict[str, bytes] = {}
        dirs: set[str] = set()
        for path, subdirs, names in os.walk(self.archive_root):
            rel = os.path.relpath(path, self.archive_root)
            dirs |= {os.path.normpath(os.path.join(rel, d)) for d in subdirs}
            for n in names:
                with open(os.path.join(path, n), "rb") as f:
                    files[os.path.normpath(os.path.join(rel, n))] = f.read()
        return files, dirs

    def counts(self) -> Counts:
        """What the steps reported per (category, store): erased, anonymised and kept per reason."""
        return {
            (s.category, s.store): +Counter(
                {"erased": s.erased, "anonymised": s.anonymised, **{r.value: n for r, n in s.kept.items()}}
            )
            for s in self.steps
        }


def _xcoms(run: Any, task_id: str) -> list[Any]:
    """The return values of ``task_id`` in ``run``, by map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .order_by(XComModel.map_index)
            .all()
        )
        values = [row.value for row in rows]
    return [json.loads(v) if isinstance(v, str) else v for v in values]


def _steps(run: Any) -> list[StepResult]:
    files = [
        from_json(StepResult, v)
        for store in ("s3", "sftp", "filesystem")
        for v in _xcoms(run, f"category.erase_{store}")
        if isinstance(v, dict)
    ]
    (database,) = _xcoms(run, "erase_databases")
    return files + list(from_json(DatabasePass, database).results)


def _run_dag(world: ShopWorld, mode: Mode) -> tuple[Any, str]:
    from tests.integration.test_dags import dag

    if mode == "nightly":
        nightly = dag("retention_nightly")
        for t in nightly.tasks:
            t.retries = 0  # a failure must end the run now, not after the production backoff
        return nightly.test(run_conf={"dry_run": False, "as_of": NOW.isoformat()}), "finish_nightly"
    erasure = dag("customer_erasure")
    for t in erasure.tasks:
        t.retries = 0
    conf = {
        "customer_id": world.subject,
        "request_ref": REQUEST_REF,
        "reason": "erasure_request",
        "dry_run": False,
    }
    # The request is evaluated at the world's clock too: a run's clock is the time it runs after.
    return erasure.test(run_after=NOW, run_conf=conf), "write_receipt"


def _shop_run(services: tuple[Any, ...], mode: Mode) -> Iterator[ShopRun]:
    """A fresh world in fresh stores, wired into Airflow as in production, and one DAG run over it."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    from tests.integration.test_dags import TOMBSTONE_CONN, _conn_json

    pg_server, s3_server, s3_client, sftp_server = services
    name = f"shop_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_server.create_database(name))
    suffix = uuid.uuid4().hex[:12].translate(_LETTERS)  # the ledger refuses long digit runs
    bucket = s3_server.create_bucket(f"shop-docs-{suffix}")
    receipts = s3_server.create_bucket(f"shop-receipts-{suffix}")
    root = tempfile.mkdtemp(prefix="shop-", dir=sftp_server.archive_root)
    try:
        with SFTPHook(ssh_conn_id="archive_sftp").get_managed_conn() as sftp:
            world = generate(engine, s3_client=s3_client, bucket=bucket, sftp_client=sftp, archive_root=root)
        Ledger(engine).ensure_schema()
        registry = HoldRegistry(engine, subject_format=load_policies(POLICY_DIR).subject)
        registry.ensure_schema()
        for held in sorted(world.held):
            registry.add(
                reason="Verserende retssag (sag RS-0007)", subject=held, now=NOW - timedelta(days=30)
            )
        settings = {
            "bucket_map": {POLICY_BUCKET: bucket},
            "archive_root": root,
            "receipts_bucket": receipts,
        }
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RETENTION_POLICY_DIR", str(POLICY_DIR))
            env.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(engine))
            key = json.dumps({"conn_type": "generic", "password": KEY.decode()})
            env.setenv("AIRFLOW_CONN_RETENTION_PSEUDONYM", key)
            env.setenv("AIRFLOW_CONN_RETENTION_TOMBSTONE_KEY", TOMBSTONE_CONN)
            env.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps(settings))
            run, last = _run_dag(world, mode)
        assert run.state == "success", f"the {mode} run failed"
        (result,) = _xcoms(run, last)
        # the run pseudonymises with its year's key, which the master key KEY only wraps
        oracle = expected(world, mode, Keyring(engine, KEY).key(period_of(NOW)))
        yield ShopRun(world, oracle, engine, s3_client, bucket, receipts, root, run, result, _steps(run))
    finally:
        engine.dispose()
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def shop_services(
    pg_server: Any, s3_server: Any, s3_client: Any, sftp_server: Any, airflow_db: Any
) -> tuple[Any, ...]:
    return pg_server, s3_server, s3_client, sftp_server


@pytest.fixture(scope="module")
def nightly(shop_services: tuple[Any, ...]) -> Iterator[ShopRun]:
    yield from _shop_run(shop_services, "nightly")


@pytest.fixture(scope="module")
def erasure(shop_services: tuple[Any, ...]) -> Iterator[ShopRun]:
    yield from _shop_run(shop_services, "request")


def _differences(actual: dict[Any, Any], wanted: dict[Any, Any]) -> dict[Any, tuple[Any, Any]]:
    """Key -> (found, expected) where they differ: an assertion message that names the rows."""
    return {
        k: (actual.get(k), wanted.get(k))
        for k in actual.keys() | wanted.keys()
        if actual.get(k) != wanted.get(k)
    }


def _assert_stores_as_expected(run: ShopRun) -> None:
    tables = run.tables()
    for table in TABLES:
        assert _differences(tables[table], run.expected.rows[table]) == {}, table
    wanted = {k: sorted(v) for k, v in run.expected.objects.items()}
    assert _differences(run.objects(), wanted) == {}
    files, dirs = run.archive()
    assert _differences(files, run.expected.archive) == {}
    assert dirs == run.expected.directories


# -- the world and its oracle, without services ----------------------------------------------------


def test_the_world_is_deterministic_and_has_the_shapes_it_promises() -> None:
    world = plan()
    assert plan() == world, "the same seed and clock give the same world"
    assert plan(seed=12) != world
    rows = world.rows
    customers, orders = rows["customers"], rows["orders"]
    assert 30 <= len(customers) <= 40 and len(set(world.personas.values())) >= 6
    assert all(not no[3:].isdigit() for no in customers)
    homes = Counter(c["address_id"] for c in customers.values() if c["address_id"] is not None)
    assert sum(n == 2 for n in homes.values()) >= 3, "homes two customers share"
    assert any(c["address_id"] is None for c in customers.values()), "a customer without an address"
    assert any(c["last_activity_at"] is None for c in customers.values()), "a customer never active"
    assert any(o["shipping_address_id"] is None for o in orders.values()), "a pickup order"
    assert any(
        o["shipping_address_id"] == c["address_id"] and c["customer_no"] != o["customer_no"]
        for o in orders.values()
        for c in customers.values()
    ), "an order ships to another customer's home"
    assert any(line["order_id"] is None for line in rows["order_lines"].values()), "a line in the basket"
    assert any(i["order_id"] is None for i in rows["invoices"].values()), "an invoice without an order"
    assert any(g["id"] in {o["gift_card_id"] for o in orders.values()} for g in rows["gift_cards"].values())
    assert sum(v[-1] is None for v in world.documents.values()) >= 3, "keys ending in a delete marker"
    assert any(len(v) >= 3 for v in world.documents.values()), "keys with several versions"
    assert any(p.startswith("invoices/") for p in world.archive)
    assert sum(p.endswith("/welcome.txt") for p in world.archive) >= 20, "a folder per customer"
    assert world.held and world.subject in customers and world.subject not in world.held


@pytest.mark.parametrize("mode", ["nightly", "request"])
def test_the_oracle_agrees_with_every_case_set_up_by_hand(mode: Mode) -> None:
    """The oracle is checked against cases reasoned out by hand from the README (``Story.why``)."""
    world = plan()
    oracle = expected(world, mode, KEY)
    stories = [s for s in world.stories if s.mode == mode]
    assert len(stories) >= 10
    wrong = [
        (s.table, s.key, s.outcome, s.why)
        for s in stories
        if oracle.outcome(s.table, s.key, world.rows[s.table][s.key]) != s.outcome
    ]
    assert wrong == []


# -- the nightly run --------------------------------------------------------------------------------


def test_the_policies_validate_against_the_schema_on_postgresql(
    nightly: ShopRun, capsys: pytest.CaptureFixture[str]
) -> None:
    url = nightly.engine.url.render_as_string(hide_password=False)
    assert cli.main(["validate", str(POLICY_DIR), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "6 policies valid" in out and "checked against the database" in out
    for hop in (
        "delivery_data locations[0]: customers.customer_no -> orders.customer_no (to the child rows",
        "delivery_data locations[0]: orders.shipping_address_id -> addresses.id (to the parent rows",
        "customers locations[1]: customers.address_id -> addresses.id (to the parent rows",
        "order_lines retention.anchor_via: order_lines.order_id -> orders.id (to the parent rows",
    ):
        assert hop in out


def test_nightly_leaves_every_row_version_and_file_as_the_readme_rules_say(nightly: ShopRun) -> None:
    assert nightly.expected.rows != nightly.world.rows, "the nightly run has due data to erase"
    _assert_stores_as_expected(nightly)


def test_nightly_keeps_everything_of_the_customer_under_a_legal_hold(nightly: ShopRun) -> None:
    """Without the oracle: the held customer's rows, object versions and folder are all still there."""
    world = nightly.world
    (held,) = world.held
    tables = nightly.tables()
    for table, rows in world.rows.items():
        subject = "buyer_customer_no" if table == "gift_cards" else "customer_no"
        if subject in TABLES[table]:
            theirs = {k: r for k, r in rows.items() if r[subject] == held}
            assert {k: tables[table].get(k) for k in theirs} == theirs, table
    assert (
        tables["addresses"][world.rows["customers"][held]["address_id"]]
        == world.rows["addresses"][world.rows["customers"][held]["address_id"]]
    )
    objects = nightly.objects()
    theirs = {k: sorted(v) for k, v in world.objects.items() if k.startswith(f"orders/{held}/")}
    assert theirs and {k: objects.get(k) for k in theirs} == theirs
    files, _dirs = nightly.archive()
    folder = {p: c for p, c in world.archive.items() if p.startswith(f"customers/{held}/")}
    assert folder and {p: files.get(p) for p in folder} == folder


def test_nightly_steps_report_what_they_erased_anonymised_and_kept_and_why(nightly: ShopRun) -> None:
    actual, wanted = nightly.counts(), {k: +v for k, v in nightly.expected.counts.items()}
    # The database step of a category with join paths counts its held rows as its largest location
    # does (not a sum over its tables), so there only whether a hold kept anything is compared.
    with_paths = {p["id"] for p in _policies() if any("via" in loc for loc in p["locations"])}
    for (category, store), counts in actual.items():
        if store == "database" and category in with_paths:
            assert bool(counts.pop("legal_hold", 0)) == bool(wanted[(category, store)].pop("legal_hold", 0))
    assert {k: v for k, v in actual.items() if v} == {k: v for k, v in wanted.items() if v}


def _policies() -> list[dict[str, Any]]:
    import yaml

    return [yaml.safe_load(p.read_text()) for p in sorted(POLICY_DIR.glob("[!_]*.yaml"))]


def test_nightly_summary_totals_plans_and_proof(nightly: ShopRun) -> None:
    summary = from_json(RunSummary, nightly.result)
    oracle = nightly.expected.counts
    assert summary.totals.erased == sum(c["erased"] for c in oracle.values())
    assert summary.totals.anonymised == sum(c["anonymised"] for c in oracle.values())
    assert summary.proof.ok and summary.not_erased == {} and summary.categories == 6
    backlog = {c: {r.value: n for r, n in reasons.items()} for c, reasons in summary.backlog.items()}
    for category in {c for c, _store in oracle}:
        for reason in ("shared_with_not_due", "blocked_by_reference"):
            wanted = sum(v[reason] for (c, _s), v in oracle.items() if c == category)
            assert backlog.get(category, {}).get(reason, 0) == wanted, (category, reason)
    plans = {
        p.category: p for p in (from_json(CategoryPlan, v) for v in _xcoms(nightly.run, "category.plan"))
    }
    assert plans["customer_notes"].on_request_only and plans["customer_notes"].records == 0
    assert not any(p.needs_approval for p in plans.values())


# -- the erasure request ----------------------------------------------------------------------------


def test_erasure_leaves_every_row_version_and_file_as_the_readme_rules_say(erasure: ShopRun) -> None:
    world = erasure.world
    subject = world.rows["customers"][world.subject]
    others = {no: c for no, c in world.rows["customers"].items() if no != world.subject}
    assert subject["address_id"] in {c["address_id"] for c in others.values()}, "a home shared"
    assert any(
        o["shipping_address_id"] is None and o["customer_no"] == world.subject
        for o in world.rows["orders"].values()
    )
    _assert_stores_as_expected(erasure)


def test_erasure_leaves_the_customer_s_name_only_where_the_law_or_another_customer_keeps_it(
    erasure: ShopRun,
) -> None:
    """Without the oracle: the name survives in the invoices the law keeps (rows and PDFs) and on the
    home another customer shares, nowhere else in any store."""
    world = erasure.world
    name = world.rows["customers"][world.subject]["name"]
    tables = erasure.tables()
    found = {(t, k) for t, rows in tables.items() for k, r in rows.items() if name in repr(r)}
    kept_invoices = {
        ("invoices", k) for k, r in tables["invoices"].items() if r["customer_no"] == world.subject
    }
    home = world.rows["customers"][world.subject]["address_id"]
    assert kept_invoices and found == kept_invoices | {("addresses", home)}
    files, _dirs = erasure.archive()
    numbers = {r["invoice_no"] for _t, k in kept_invoices for r in [tables["invoices"][k]]}
    assert {p for p, c in files.items() if name.encode() in c} == {
        f"invoices/{n}.pdf" for n in numbers
    } & set(files)
    assert not any(k.startswith(f"orders/{world.subject}/") for k in erasure.objects())
    assert not any(world.subject in p for p in files)


def test_erasure_receipt_counts_what_was_erased_anonymised_and_kept_and_why(erasure: ShopRun) -> None:
    receipt, oracle = erasure.result, erasure.expected
    assert receipt["verified"] and receipt["request_ref"] == REQUEST_REF
    by_category = {c["category"]: c for c in receipt["categories"]}
    for (category, store), counts in oracle.counts.items():
        entry = by_category[category]
        assert entry["stores"][store]["erased"] == counts["erased"], (category, store)
        assert entry["stores"][store]["anonymised"] == counts["anonymised"], (category, store)
    for category, entry in by_category.items():
        kept = Counter({k["reason"]: k["count"] for k in entry["kept"]})
        wanted = sum((+v for (c, _s), v in oracle.counts.items() if c == category), Counter())
        wanted = Counter({r: n for r, n in wanted.items() if r not in ("erased", "anonymised")})
        if category in oracle.statutory:
            wanted["statutory"] = oracle.statutory[category]["count"]
        assert kept == wanted, category
    law = oracle.statutory["invoices"]
    assert [k for k in by_category["invoices"]["kept"] if k["reason"] == "statutory"] == [
        {"reason": "statutory", **law}
    ]
    totals = receipt["totals"]
    assert totals["erased"] == sum(c["erased"] for c in oracle.counts.values())
    assert totals["anonymised"] == sum(c["anonymised"] for c in oracle.counts.values())
    stored = erasure.s3_client.get_object(Bucket=erasure.receipts_bucket, Key=receipt["location"]["json_key"])
    text = stored["Body"].read().decode()
    assert json.loads(text)["totals"] == totals
    customer = erasure.world.rows["customers"][erasure.world.subject]
    for value in (erasure.world.subject, customer["name"], customer["email"]):
        assert value not in text and value not in repr(Ledger(erasure.engine).entries(limit=1000))


# -- the ledger -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["nightly", "erasure"])
def test_the_ledger_records_every_erasure_and_anonymisation(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Per category and store, the ledger's ``erased`` and ``anonymised`` outcomes add up to what the
    run did, with an intact chain. (The customers category's gift-card location deletes its own rows
    and anonymises the shared ones in one batch.)"""
    run: ShopRun = request.getfixturevalue(which)
    ledger = Ledger(run.engine)
    assert ledger.verify_chain().ok
    recorded: Counts = {}
    for (category, store, outcome), n in ledger.outcomes_for_run(run.run.run_id).items():
        if category is not None and store is not None and outcome in ("erased", "anonymised"):
            recorded.setdefault((category, store), Counter())[outcome] += n
    wanted = {
        k: +Counter({o: v[o] for o in ("erased", "anonymised")}) for k, v in run.expected.counts.items()
    }
    assert {k: +v for k, v in recorded.items() if +v} == {k: v for k, v in wanted.items() if v}
