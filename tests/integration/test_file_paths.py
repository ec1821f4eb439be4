"""Files named through a join path (#11): an order's document in S3, a delivery photo in the archive.

The web shop's customers own orders (``orders.customer_id -> customers.id``); each order's
document lies in S3 under ``orders/{customer_id}/{id}.pdf`` (filled from the *order* row, whose
``id`` is not the customer's), and each shipping address may have a photo in the SFTP archive
(``deliveries/{photo}``, two hops away, through the orders, which are only read on the way).
An address two customers ship to is shared: its photo stays while either may not be erased.
Real PostgreSQL, moto's S3 server and OpenSSH; every object version and file is checked.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy import Engine

from harness.context import engine_context
from retention import flow
from retention.adapters.database import reflect_schema
from retention.engine import RunContext
from retention.errors import PolicyError
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import Policy, PolicySet, check_against_schema, explain_paths, parse_policy
from retention.results import Reason
from tests.integration.conftest import PSEUDONYM_KEY

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
OLD = datetime(2024, 1, 10, 10, 0, tzinfo=UTC)
NEW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)

SCHEMA = (
    "CREATE TABLE addresses (id INTEGER PRIMARY KEY, street TEXT NOT NULL, photo TEXT)",
    "CREATE INDEX addresses_photo ON addresses (photo)",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " address_id INTEGER REFERENCES addresses(id), created_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),"
    " shipping_address_id INTEGER REFERENCES addresses(id))",
    "CREATE INDEX orders_customer ON orders (customer_id)",
)
ADDRESSES = {
    20: "a20.jpg",  # only customer 1's order 100 ships here
    21: "a21.jpg",  # customer 1's order 101 and customer 2's order 200
    22: None,  # customer 1's order 103: no photo
    23: "a23.jpg",  # customer 3's order 300
}
CUSTOMERS = {1: OLD, 2: NEW, 3: OLD, 4: OLD}  # customer 4 has no orders
ORDERS = {100: (1, 20), 101: (1, 21), 102: (1, None), 103: (1, 22), 200: (2, 21), 300: (3, 23)}
MARKED = "orders/1/102.pdf"  # its newest version is a delete marker


def document(order: int) -> str:
    return f"orders/{ORDERS[order][0]}/{order}.pdf"


def photo(address: int) -> str:
    return f"deliveries/{ADDRESSES[address]}"


BUCKET_IN_POLICY = "alleskar-documents"
S3_DOCS = {
    "store": "s3",
    "bucket": BUCKET_IN_POLICY,
    "key": "orders/{customer_id}/{id}.pdf",
    "via": ["customers.id -> orders.customer_id"],
}
PHOTOS = {
    "store": "sftp",
    "path": "deliveries/{photo}",
    "via": ["customers.id -> orders.customer_id", "orders.shipping_address_id -> addresses.id"],
}
ORDER_ROWS = {
    "store": "database",
    "table": "orders",
    "action": "delete",
    "via": ["customers.id -> orders.customer_id"],
}
CUSTOMER_ROWS = {"store": "database", "table": "customers", "action": "delete"}


def shop_policy(*locations: dict[str, Any]) -> Policy:
    doc = {
        "id": "shop_customers",
        "description": "Web-shop customers with their orders, order documents and delivery photos.",
        "legal_basis": {"basis": "contract", "gdpr": "Art. 6(1)(b) (contract)"},
        "rationale": "The file-path tests need exactly these items, nothing more.",
        "retention": {"period": "P1Y", "counts_from": "event", "event": "sign-up", "anchor": "created_at"},
        "records": {"table": "customers", "key": "id", "subject": "id"},
        "erasure_request": {"action": "erase"},
        "cap": {"max_items": 100, "max_fraction": 1.0},
        "locations": list(locations) or [S3_DOCS, PHOTOS, ORDER_ROWS, CUSTOMER_ROWS],
    }
    return parse_policy(yaml.safe_dump(doc, sort_keys=False), "shop_customers.yaml")


@dataclass
class Shop:
    engine: Engine
    s3_client: Any
    bucket: str
    sftp_client: Any
    archive_root: str
    policies: PolicySet

    def context(self, subject: str | None = None) -> RunContext:
        check_against_schema(self.policies, reflect_schema(self.engine))
        return engine_context(
            self.engine,
            self.policies,
            now=NOW,
            pseudonym_key=PSEUDONYM_KEY,
            s3_client=self.s3_client,
            sftp_client=self.sftp_client,
            bucket=self.bucket,
            archive_root=self.archive_root,
            mode="due" if subject is None else "subject",
            subject=subject,
        )

    def state(self) -> dict[str, Any]:
        """Rows per table, the number of versions and delete markers per S3 key, archive files."""
        with self.engine.connect() as c:
            tables = {
                t: set(c.execute(sa.text(f"SELECT id FROM {t}")).scalars())  # noqa: S608 - test tables
                for t in ("addresses", "customers", "orders")
            }
        versions: dict[str, int] = {}
        for page in self.s3_client.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                versions[v["Key"]] = versions.get(v["Key"], 0) + 1
        files = set()
        for dirpath, _dirs, names in os.walk(self.archive_root):
            files |= {os.path.relpath(os.path.join(dirpath, n), self.archive_root) for n in names}
        return {**tables, "s3": versions, "archive": files}


def expected(customers: set[int], documents: set[int], photos: set[int]) -> dict[str, Any]:
    """The stores when exactly these customers (with their orders), order documents and photos are left."""
    return {
        "addresses": set(ADDRESSES),
        "customers": customers,
        "orders": {o for o, (c, _a) in ORDERS.items() if c in customers},
        "s3": {document(o): 3 if document(o) == MARKED else 2 for o in documents},
        "archive": {photo(a) for a in photos},
    }


ALL = expected(set(CUSTOMERS), set(ORDERS), {20, 21, 23})


@pytest.fixture
def shop(fresh_db: Engine, s3_server: Any, s3_client: Any, sftp_client: Any, archive_root: str) -> Shop:
    with fresh_db.begin() as c:
        for statement in SCHEMA:
            c.exec_driver_sql(statement)
        for address, name in ADDRESSES.items():
            c.execute(sa.text("INSERT INTO addresses VALUES (:i, 'Street', :p)"), {"i": address, "p": name})
        for customer, created in CUSTOMERS.items():
            c.execute(
                sa.text("INSERT INTO customers VALUES (:i, 'Name', NULL, :at)"),
                {"i": customer, "at": created},
            )
        for order, (customer, address) in ORDERS.items():
            c.execute(
                sa.text("INSERT INTO orders VALUES (:i, :c, :a)"), {"i": order, "c": customer, "a": address}
            )
    letters = str.maketrans("0123456789", "ghijklmnop")
    bucket = s3_server.create_bucket("paths-" + uuid.uuid4().hex[:16].translate(letters))
    for order in ORDERS:
        for body in (b"first", b"second"):
            s3_client.put_object(Bucket=bucket, Key=document(order), Body=body)
    s3_client.delete_object(Bucket=bucket, Key=MARKED)
    sftp_client.mkdir(f"{archive_root}/deliveries")
    for address, name in ADDRESSES.items():
        if name is not None:
            with sftp_client.open(f"{archive_root}/{photo(address)}", "w") as f:
                f.write(f"photo of address {address}")
    Ledger(fresh_db).ensure_schema()
    HoldRegistry(fresh_db).ensure_schema()
    policies = PolicySet((shop_policy(),), {"shop_customers": "shop_customers.yaml"})
    world = Shop(fresh_db, s3_client, bucket, sftp_client, archive_root, policies)
    assert world.state() == ALL, "the world was not built as described"
    return world


def kept(outcome: flow.RunOutcome, store: str) -> dict[Reason, int]:
    return next(r.kept for r in outcome.files if r.store == store and r.category == "shop_customers")


def test_the_nightly_run_erases_files_named_by_rows_the_due_customers_reach(shop: Shop) -> None:
    outcome = flow.run_all(shop.context())

    # Customers 1, 3 and 4 are due. The photo of address 21 stays: customer 2 (not due) ships
    # there too. It keeps only itself: the addresses are only read, so customer 1 goes.
    assert shop.state() == expected({2}, {200}, {21})
    assert kept(outcome, "sftp") == {Reason.SHARED_WITH_NOT_DUE: 1}
    assert kept(outcome, "s3") == {}
    assert Ledger(shop.engine).verify_chain().ok


def test_a_request_erases_the_requester_s_files_and_keeps_a_photo_shared_with_another(shop: Shop) -> None:
    outcome = flow.run_all(
        shop.context("1"), request=flow.ReceiptRequest(request_ref="PR-7", reason="erasure_request")
    )

    assert shop.state() == expected({2, 3, 4}, {200, 300}, {21, 23})
    assert kept(outcome, "sftp") == {Reason.SHARED_WITH_NOT_DUE: 1}
    assert outcome.receipt is not None and outcome.receipt["verified"]


def test_a_held_customer_keeps_the_files_their_rows_name(shop: Shop) -> None:
    HoldRegistry(shop.engine).add(subject="3", reason="dispute", now=NOW)

    flow.run_all(shop.context())

    assert shop.state() == expected({2, 3}, {200, 300}, {21, 23})


def test_a_kept_document_keeps_its_order_and_so_its_customer_rows(shop: Shop) -> None:
    """The category deletes the orders that name the documents: a document that must stay keeps
    its order row, so the customer the order references stays too (never an unnamed object)."""
    HoldRegistry(shop.engine).add(prefix="orders/1/101.pdf", reason="audit", now=NOW)

    outcome = flow.run_all(shop.context())

    assert shop.state() == expected({1, 2}, {101, 200}, {21})
    assert kept(outcome, "s3") == {Reason.LEGAL_HOLD: 2}


def test_a_file_that_a_category_outside_the_request_s_scope_also_names_stays(shop: Shop) -> None:
    """A withdrawn consent acts on the consent category only: the order documents it names are
    named by the contract category's orders too, which the withdrawal leaves alone, so they stay."""
    doc = yaml.safe_load(yaml.safe_dump(shop_policy().model_dump(mode="json", exclude_none=True)))
    doc.update(
        id="shop_newsletter",
        legal_basis={"basis": "consent", "gdpr": "Art. 6(1)(a) (consent)"},
        locations=[
            S3_DOCS,
            {
                "store": "database",
                "table": "customers",
                "action": "anonymise",
                "fields": {"name": {"strategy": "redact"}},
            },
        ],
    )
    newsletter = parse_policy(yaml.safe_dump(doc), "shop_newsletter.yaml")
    shop.policies = PolicySet(
        (shop.policies.policies[0], newsletter),
        {"shop_customers": "shop_customers.yaml", "shop_newsletter": "shop_newsletter.yaml"},
    )

    outcome = flow.run_all(
        shop.context("1"), request=flow.ReceiptRequest(request_ref="PR-8", reason="consent_withdrawn")
    )

    assert shop.state() == ALL
    assert [c["category"] for c in (outcome.receipt or {})["categories"]] == ["shop_newsletter"]
    docs = next(r for r in outcome.files if r.store == "s3")
    assert (docs.erased, docs.kept) == (0, {Reason.SHARED_WITH_NOT_DUE: 9})  # 4 keys: 8 versions, 1 marker


def test_validate_explains_a_file_path_and_refuses_a_join_without_a_constraint(shop: Shop) -> None:
    schema = reflect_schema(shop.engine)
    lines = explain_paths(shop.policies, schema)
    assert (
        "shop_customers locations[1]: orders.shipping_address_id -> addresses.id "
        "(to the parent rows, by constraint orders.shipping_address_id -> addresses.id)"
    ) in lines

    wrong = dict(S3_DOCS, via=["customers.id -> orders.shipping_address_id"])
    with pytest.raises(PolicyError) as e:
        check_against_schema(
            PolicySet((shop_policy(wrong, CUSTOMER_ROWS),), {"shop_customers": "f.yaml"}), schema
        )
    assert (e.value.file, e.value.field) == ("f.yaml", "locations[0].via[0]")
    assert "no foreign key constraint links customers.id and orders.shipping_address_id" in str(e.value)

    # The template is filled from the path's last table: a column of the records is not there.
    misnamed = dict(PHOTOS, path="deliveries/{name}")
    with pytest.raises(PolicyError) as e:
        check_against_schema(
            PolicySet((shop_policy(misnamed, CUSTOMER_ROWS),), {"shop_customers": "f.yaml"}), schema
        )
    assert (e.value.file, e.value.field) == ("f.yaml", "locations[0].path")
    assert "addresses" in str(e.value) and "name" in str(e.value)


@pytest.mark.parametrize(
    ("via", "problem"),
    [
        (
            ["orders.customer_id -> customers.id"],
            "hop [0] starts at table 'orders', but the path is at 'customers'",
        ),
        (["customers.id => orders.customer_id"], "a hop is written 'table.column -> table.column'"),
        ([], "a path needs at least one hop"),
    ],
)
def test_a_malformed_file_path_is_refused_when_the_policy_is_read(via: list[str], problem: str) -> None:
    with pytest.raises(PolicyError) as e:
        shop_policy(dict(S3_DOCS, via=via), CUSTOMER_ROWS)
    assert e.value.file == "shop_customers.yaml"
    assert e.value.field.startswith("locations[0]")
    assert problem in str(e.value)
