"""The access report (GDPR Art. 15 and 20) on the reference world in the real stores (#12).

A small reference world in PostgreSQL, moto's S3 server and OpenSSH, made once for the module.
The report for a customer with data in all three stores is checked against the world's truth and
against the stores read directly: every row, object version and archive file of the customer is
in it, nothing of another customer is, the ZIP holds the contents, the ledger entry holds counts
and a digest only, and the report expires by its own policy in the nightly run (last: it erases).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from harness.context import POLICY_BUCKET, engine_context
from harness.world_rules import NOW, TABLES
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Profile, World
from retention import access, flow
from retention.access_render import Header, MarkdownWriter, Totals
from retention.engine import RunContext
from retention.ledger import Ledger
from retention.policy import PolicySet, load_policies
from tests.integration.conftest import POLICY_DIR, PSEUDONYM_KEY

REQUEST = "PR-2026-00042"
_LETTERS = str.maketrans("0123456789", "ghijklmnop")


@dataclass
class AccessWorld:
    world: World
    engine: sa.Engine
    s3: Any
    bucket: str
    receipts: str
    sftp: Any
    archive_root: str
    policies: PolicySet
    customer: int
    """A customer with rows, S3 documents and archive files, under no legal hold."""

    def context(self, *, subject: str | None = None, now: Any = NOW) -> RunContext:
        ctx = engine_context(
            self.engine,
            self.policies,
            now=now,
            pseudonym_key=PSEUDONYM_KEY,
            s3_client=self.s3,
            sftp_client=self.sftp,
            bucket=self.bucket,
            archive_root=self.archive_root,
            mode="subject" if subject else "due",
            subject=subject,
            batch_size=50,
        )
        # As the deployment maps it: the reports' policy bucket is the receipts bucket.
        ctx.bucket_map = access.bucket_map_with_receipts({POLICY_BUCKET: self.bucket}, self.receipts)
        return ctx

    def report(self, customer: int, *, now: Any = NOW, contents: bool = False) -> access.AccessReport:
        return access.make_report(
            self.context(subject=str(customer), now=now),
            REQUEST,
            output=access.ReportOutput(self.s3, self.receipts),
            clients=access.FileClients(s3=self.s3, trees={"sftp": self.sftp}),
            include_contents=contents,
        )

    def stored(self, report: access.AccessReport, name: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.receipts, Key=report.prefix + name)["Body"].read()
        return body

    def versions(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            found += page.get("Versions", []) + page.get("DeleteMarkers", [])
        return found

    def rows(self, table: str, where: str, value: Any) -> list[dict[str, Any]]:
        t = sa.Table(table, sa.MetaData(), autoload_with=self.engine)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(sa.select(t).where(t.c[where] == value)).mappings()]


@pytest.fixture(scope="module")
def aw(pg_server: Any, s3_server: Any, s3_client: Any, sftp_server: Any) -> Iterator[AccessWorld]:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    name = f"access_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_server.create_database(name))
    suffix = uuid.uuid4().hex[:12].translate(_LETTERS)
    bucket = s3_server.create_bucket(f"access-docs-{suffix}")
    receipts = s3_server.create_bucket(f"access-receipts-{suffix}")
    root = tempfile.mkdtemp(prefix="access-", dir=sftp_server.archive_root)
    try:
        with SFTPHook(ssh_conn_id="archive_sftp").get_managed_conn() as sftp:
            world = generate(
                engine,
                s3_client=s3_client,
                bucket=bucket,
                sftp_client=sftp,
                archive_root=root,
                size=WorldSize.small(),
            )
            Ledger(engine).ensure_schema()
            customer = next(
                c
                for c in world.customers_with(Profile.MIXED)
                if len(world.customer_inventory(c).archive_paths) >= 1
                and all(world.customer_inventory(c).rows[t] for t in TABLES)
            )
            yield AccessWorld(
                world, engine, s3_client, bucket, receipts, sftp, root, load_policies(POLICY_DIR), customer
            )
    finally:
        engine.dispose()
        pg_server.drop_database(name)


def _json_value(value: Any) -> Any:
    """A column value as the report writes it."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _found(pattern: str, text: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(pattern) + r"(?![\w])", text) is not None


def test_the_report_holds_exactly_the_customers_data_from_every_store(aw: AccessWorld) -> None:
    cid, world = aw.customer, aw.world
    inv = world.customer_inventory(cid)
    listings: list[dict[str, Any]] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        listings.append(dict(params))

    aw.s3.meta.events.register("provide-client-params.s3.ListObjectVersions", note)
    try:
        report = aw.report(cid, contents=True)
    finally:
        aw.s3.meta.events.unregister("provide-client-params.s3.ListObjectVersions", note)

    # Stored under a random prefix: neither the customer id nor the request reference is in a key.
    assert re.fullmatch(r"access-reports/[a-z]{26}/", report.prefix), report.prefix
    keys = {v["Key"] for v in aw.versions(aw.receipts, report.prefix)}
    assert keys == {report.prefix + f for f in ("report.json", "rapport.md", "report.md", "files.zip")}
    assert not any(re.search(r"[0-9]", k) or REQUEST in k for k in keys)
    raw = aw.stored(report, "report.json")
    doc = json.loads(raw)
    assert doc["customer_id"] == str(cid) and doc["request_ref"] == REQUEST
    assert hashlib.sha256(raw).hexdigest() == report.sha256

    # Every row of the customer, every column as the database has it (the customers row by its id).
    locations = {(loc["store"], loc["location"]): loc for c in doc["categories"] for loc in c["locations"]}
    for table in TABLES:
        listed = locations[("database", f"table:{table}")]
        rows = aw.rows(table, "id" if table == "customers" else "customer_id", cid)
        assert {r["id"] for r in rows} == set(inv.rows[table]), table
        expected = sorted(({k: _json_value(v) for k, v in r.items()} for r in rows), key=lambda r: r["id"])
        assert [i["columns"] for i in listed["items"]] == expected, table
        assert listed["count"] == len(rows) and not any(i["shared"] for i in listed["items"])

    # Every version of the customer's documents, as S3 lists them, and nothing else.
    objects = locations[("s3", "s3:alleskar-documents/{s3_key}")]["items"]
    truth = [v for key in inv.s3_objects for v in aw.versions(aw.bucket, key) if v["Key"] == key]
    assert {(o["key"], o["version_id"], o["size"]) for o in objects} == {
        (v["Key"], v["VersionId"], v["Size"]) for v in truth
    }
    assert len(objects) == sum(inv.s3_objects.values())
    # Each listing named one of the customer's keys: no listing of a bucket.
    assert listings and all(p["Prefix"] in inv.s3_objects or p["Bucket"] == aw.receipts for p in listings)

    # Every archive file of the customer, with its size on disk.
    files = locations[("sftp", "sftp:{archive_path}")]["items"]
    on_disk = {p: os.stat(os.path.join(aw.archive_root, p)).st_size for p in inv.archive_paths}
    assert {f["path"]: f["size"] for f in files} == on_disk

    # Every category says what it is for, on what basis and for how long.
    for category in doc["categories"]:
        policy = aw.policies.get(category["category"])
        assert category["legal_basis"]["basis"] == policy.legal_basis.basis
        assert category["retention"]["words"]["da"] and category["retention"]["words"]["en"]
    assert doc["totals"]["items"] == report.items == sum(sum(s.values()) for s in report.counts.values())

    # Nothing of another customer, in the JSON or the readable reports; the customer's own data is there.
    da, en = aw.stored(report, "rapport.md").decode(), aw.stored(report, "report.md").decode()
    text = raw.decode() + da + en
    mine = world.canaries(cid)
    assert mine.email in raw.decode() and mine.name in da and mine.name in en
    for other in range(1, world.size.customers + 1):
        if other != cid:
            theirs = world.canaries(other)
            for value in (theirs.name, theirs.email, theirs.phone):
                assert not _found(value, text), f"customer {other}'s data is in the report"
    assert da.index("Formål") < da.index("Opbevaring") and "Purpose" in en and "Retention" in en

    # files.zip: each document's current version and each archive file, byte for byte.
    archive = zipfile.ZipFile(io.BytesIO(aw.stored(report, "files.zip")))
    expected_zip = {f"s3/alleskar-documents/{key}" for key in inv.s3_objects}
    expected_zip |= {f"sftp/{path}" for path in inv.archive_paths}
    assert set(archive.namelist()) == expected_zip
    for key in inv.s3_objects:
        current = aw.s3.get_object(Bucket=aw.bucket, Key=key)["Body"].read()
        assert archive.read(f"s3/alleskar-documents/{key}") == current
        assert mine.phrase.encode() in current
    for path in inv.archive_paths:
        with open(os.path.join(aw.archive_root, path), "rb") as f:
            assert archive.read(f"sftp/{path}") == f.read()

    # The report's own row names its place; the ledger says a report was made, with counts and digest.
    (row,) = aw.rows("access_reports", "report_id", report.prefix.split("/")[1])
    assert row["customer_id"] == cid and row["request_ref"] == REQUEST and row["made_available_at"] == NOW
    entry = Ledger(aw.engine).entries(limit=1)[0]
    assert (entry["action"], entry["category"], entry["count"]) == (
        "access_report",
        "access_reports",
        report.items,
    )
    assert entry["items_digest"] == report.sha256 and entry["subject_ref"] == doc["subject_ref"]
    assert entry["subject_ref"].startswith("psn:")
    assert entry["detail"]["counts"]["translation_documents"] == {
        "s3": len(objects),
        "sftp": len(files),
        "database": len(inv.rows["documents"]),
    }
    dump = json.dumps(entry, default=str)
    for value in (mine.name, mine.email, mine.phone, REQUEST, report.prefix, "access-reports/"):
        assert value not in dump
    assert Ledger(aw.engine).verify_chain().ok


def test_a_category_without_its_texts_says_not_declared(aw: AccessWorld) -> None:
    policy = aw.policies.get("correspondence").model_copy(
        update={"purpose": None, "personal_data": None, "sources": None}
    )
    header = Header(REQUEST, "7", "psn:" + "0" * 32, NOW, NOW.date(), "0" * 64, False)
    texts = {}
    for lang in ("da", "en"):
        out = io.BytesIO()
        writer = MarkdownWriter(out, header, lang)
        writer.category(policy)
        writer.end_category()
        writer.close(Totals())
        texts[lang] = out.getvalue().decode()
    assert texts["da"].count("ikke angivet") == 3 and "3 år fra" in texts["da"]
    assert texts["en"].count("not declared") == 3 and "3 years from" in texts["en"]


def test_the_dag_checks_the_id_first_and_writes_the_report(
    aw: AccessWorld, airflow_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_dags import _conn_json, dag
    from tests.integration.test_subject_deployment import _task_states

    monkeypatch.setenv("AIRFLOW_CONN_BUSINESS_DB", _conn_json(aw.engine))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETENTION_PSEUDONYM",
        json.dumps({"conn_type": "generic", "password": PSEUDONYM_KEY.decode()}),
    )
    settings = {
        "bucket_map": {POLICY_BUCKET: aw.bucket, access.RECEIPTS_POLICY_BUCKET: aw.receipts},
        "archive_root": aw.archive_root,
        "receipts_bucket": aw.receipts,
    }
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", json.dumps(settings))
    reports = dag("customer_access_report")
    for t in reports.tasks:
        t.retries = 0
    rows_before = len(aw.rows("access_reports", "request_ref", "PR-2026-00043"))
    ledger_before = Ledger(aw.engine).count()

    refused = reports.test(run_conf={"customer_id": "0042", "request_ref": "PR-2026-00043"})
    assert refused.state == "failed"
    assert _task_states(refused)["check_access_request"] == "failed"
    assert Ledger(aw.engine).count() == ledger_before

    conf = {"customer_id": str(aw.customer), "request_ref": "PR-2026-00043", "include_contents": False}
    run = reports.test(run_conf=conf)
    assert run.state == "success", _task_states(run)
    result = _xcom(run, "write_access_report")
    assert result["bucket"] == aw.receipts and re.fullmatch(r"access-reports/[a-z]{26}/", result["prefix"])
    assert result["files"] == ["report.json", "rapport.md", "report.md"]
    inv = aw.world.customer_inventory(aw.customer)
    assert result["counts"]["translation_documents"]["sftp"] == len(inv.archive_paths)
    # XCom: counts and the place, nothing of the customer (the prefix is letters only).
    assert set(result) == {"bucket", "prefix", "files", "counts", "items", "shared", "sha256"}
    texts = [result["bucket"], result["prefix"], *result["files"], *result["counts"]]
    assert not any(re.search(r"[0-9]", t) for t in texts[1:]), "no number (an id) in the place or the names"
    mine = aw.world.canaries(aw.customer)
    assert not any(v in json.dumps(result) for v in (mine.name, mine.email, mine.phone))
    stored = aw.s3.get_object(Bucket=aw.receipts, Key=result["prefix"] + "report.json")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == result["sha256"]
    assert json.loads(stored)["customer_id"] == str(aw.customer)
    assert len(aw.rows("access_reports", "request_ref", "PR-2026-00043")) == rows_before + 1


def _xcom(run: Any, task_id: str) -> Any:
    from tests.integration.test_dags import _xcom as xcom

    return xcom(run, task_id)


def test_a_report_older_than_30_days_is_erased_by_the_nightly_run(aw: AccessWorld) -> None:
    other = next(c for c in aw.world.customers_with(Profile.ACTIVE) if c != aw.customer)
    old = aw.report(other, now=NOW - timedelta(days=31), contents=True)
    fresh = aw.report(other, now=NOW - timedelta(days=29))
    # More history under the old prefix: a second version and a delete marker must go too.
    aw.s3.put_object(Bucket=aw.receipts, Key=old.prefix + "report.json", Body=b"{}")
    aw.s3.delete_object(Bucket=aw.receipts, Key=old.prefix + "report.md")
    assert len(aw.versions(aw.receipts, old.prefix)) == 6

    outcome = flow.run_all(aw.context(), approved=lambda _plan: True)

    assert outcome.summary is not None and outcome.summary.proof.ok
    assert aw.versions(aw.receipts, old.prefix) == []
    assert aw.rows("access_reports", "report_id", old.prefix.split("/")[1]) == []
    assert len(aw.versions(aw.receipts, fresh.prefix)) == 3
    assert len(aw.rows("access_reports", "report_id", fresh.prefix.split("/")[1])) == 1
    erased = {(r.category, r.store): r.erased for r in outcome.results if r.category == "access_reports"}
    assert erased == {("access_reports", "s3"): 6, ("access_reports", "database"): 1}


# -- the second reference world: shared addresses and gift cards, text customer numbers --------------

SHOP_REPORTS_POLICY = """
id: access_reports
description: Access reports made for the shop's customers (a test deployment of the shipped policy).
legal_basis: {basis: legal_obligation, gdpr: "Art. 6(1)(c) with Art. 15"}
rationale: >
  An access report is a copy of the customer's data; it is deleted 30 days after it was made available.
retention: {period: P30D, counts_from: event, event: the report was made available, anchor: made_available_at}
records: {table: access_reports, key: id, subject: customer_no}
erasure_request: {action: erase}
cap: {max_items: 1000, max_fraction: 1.0}
locations:
  - {store: s3, bucket: shop-receipts, key: "access-reports/{report_id}/"}
  - {store: database, table: access_reports, action: delete}
"""
SHOP_REPORTS_TABLE = (
    "CREATE TABLE access_reports (id bigserial PRIMARY KEY, customer_no text NOT NULL, request_ref text,"
    " made_available_at timestamptz NOT NULL, report_id text UNIQUE);"
    " CREATE INDEX access_reports_customer_no ON access_reports (customer_no);"
    " CREATE INDEX access_reports_made_available_at ON access_reports (made_available_at)"
)


def test_in_the_shop_world_shared_rows_are_marked_and_nothing_only_another_customers_is_listed(
    fresh_db: sa.Engine,
    s3_server: Any,
    s3_client: Any,
    s3_bucket: str,
    sftp_client: Any,
    archive_root: str,
    tmp_path: Any,
) -> None:
    from harness import shop_world

    world = shop_world.generate(
        fresh_db, s3_client=s3_client, bucket=s3_bucket, sftp_client=sftp_client, archive_root=archive_root
    )
    with fresh_db.begin() as c:
        for statement in SHOP_REPORTS_TABLE.split(";"):
            c.exec_driver_sql(statement)
    Ledger(fresh_db).ensure_schema()
    folder = tmp_path / "policies"
    folder.mkdir()
    for f in shop_world.POLICY_DIR.glob("*.yaml"):
        (folder / f.name).write_text(f.read_text())
    (folder / "access_reports.yaml").write_text(SHOP_REPORTS_POLICY)
    receipts = s3_server.create_bucket("shop-access-" + uuid.uuid4().hex[:12].translate(_LETTERS))
    x, rows = world.subject, world.rows
    ctx = engine_context(
        fresh_db,
        load_policies(folder),
        now=shop_world.NOW,
        pseudonym_key=PSEUDONYM_KEY,
        s3_client=s3_client,
        sftp_client=sftp_client,
        archive_root=archive_root,
        mode="subject",
        subject=x,
        batch_size=3,
    )
    ctx.bucket_map = {shop_world.POLICY_BUCKET: s3_bucket, "shop-receipts": receipts}

    report = access.make_report(
        ctx,
        "PR-2026-00811",
        output=access.ReportOutput(s3_client, receipts),
        clients=access.FileClients(s3=s3_client, trees={"sftp": sftp_client}),
    )

    raw = s3_client.get_object(Bucket=receipts, Key=report.prefix + "report.json")["Body"].read().decode()
    doc = json.loads(raw)
    at = {(c["category"], loc["location"]): loc["items"] for c in doc["categories"] for loc in c["locations"]}

    def listed(category: str, label: str, key: str = "id") -> dict[Any, bool]:
        return {i["columns"][key]: i["shared"] for i in at[(category, label)]}

    home = rows["customers"][x]["address_id"]
    orders = {o for o, r in rows["orders"].items() if r["customer_no"] == x}
    ships = {rows["orders"][o]["shipping_address_id"] for o in orders} - {None}
    assert home in ships and len(ships) == 2, "the world has the subject's home and an office as ship-to"
    # The home another customer lives at, and the office another customer's order ships to: listed, shared.
    assert listed("customers", "table:addresses") == {home: True}
    assert listed("orders", "table:addresses") == dict.fromkeys(ships, True)
    assert listed("delivery_data", "table:addresses") == dict.fromkeys(ships, True)
    redeemed = {r["gift_card_id"] for r in rows["orders"].values()}
    cards = {g for g, r in rows["gift_cards"].items() if r["buyer_customer_no"] == x}
    assert listed("customers", "table:gift_cards") == {g: g in redeemed for g in cards}
    assert set(listed("orders", "table:orders")) == orders
    for table, category in (
        ("order_lines", "order_lines"),
        ("invoices", "invoices"),
        ("customer_notes", "customer_notes"),
    ):
        mine = {k for k, r in rows[table].items() if r["customer_no"] == x}
        assert listed(category, f"table:{table}") == dict.fromkeys(mine, False), table
    assert listed("customers", "table:customers", "customer_no") == {x: False}

    # Every version and delete marker of the subject's order confirmations, and their archive files.
    versions = {
        (o["key"], o["version_id"], o["delete_marker"])
        for o in at[("orders", "s3:shop-documents/orders/{customer_no}/{id}.pdf")]
    }
    assert versions == {
        (key, vid, marker)
        for key, written in world.objects.items()
        if key.startswith(f"orders/{x}/")
        for vid, marker in written
    }
    assert any(marker for _, _, marker in versions), "the world has a delete marker for the subject"
    invoice_nos = {r["invoice_no"] for r in rows["invoices"].values() if r["customer_no"] == x}
    files = {f["path"] for loc in at.items() if loc[0][1].startswith("sftp:") for f in loc[1]}
    assert files == {
        p for p in world.archive if p.startswith(f"customers/{x}/") or p[len("invoices/") : -4] in invoice_nos
    }

    # Another customer's data appears only in the rows the subject shares with them (a gift card the
    # subject bought for a housemate names the housemate); their contact data never.
    unshared = json.dumps(
        [i for c in doc["categories"] for loc in c["locations"] for i in loc["items"] if not i["shared"]],
        ensure_ascii=False,
    )
    for no, customer in rows["customers"].items():
        if no != x:
            assert customer["email"] not in raw and customer["phone"] not in raw, no
            assert customer["name"] not in unshared, no
    assert rows["customers"][x]["email"] in raw
