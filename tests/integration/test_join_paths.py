"""Join paths on a schema that is not ours, on real PostgreSQL and on SQLite (the demo's).

A small web-shop schema written as a DBA would: customers reference their home address,
orders reference a shipping address, a warehouse references an address too, order notes
have no date of their own (dated through their order), support notes have no date at all
(erased only on request). Each test states, row by row, what must be erased, anonymised or
kept, and checks exactly that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy import Engine

from harness.context import engine_context
from retention import flow
from retention.adapters.database import reflect_schema
from retention.engine import execute_step, plan_category
from retention.errors import PolicyError
from retention.holds import HoldRegistry
from retention.ledger import Ledger
from retention.policy import Policy, PolicySet, check_against_schema, explain_paths, parse_policy
from retention.results import Reason
from tests.integration.conftest import PSEUDONYM_KEY

NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
OLD = "2024-01-10 10:00:00"
NEW = "2026-06-01 10:00:00"

SCHEMA = (
    "CREATE TABLE addresses (id INTEGER PRIMARY KEY, street TEXT, city TEXT)",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT,"
    " address_id INTEGER REFERENCES addresses(id), created_at TIMESTAMP)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),"
    " shipping_address_id INTEGER REFERENCES addresses(id), ordered_at TIMESTAMP)",
    "CREATE TABLE warehouses (id INTEGER PRIMARY KEY, address_id INTEGER REFERENCES addresses(id))",
    "CREATE TABLE order_notes (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id),"
    " customer_id INTEGER, body TEXT)",
    "CREATE TABLE support_notes (id INTEGER PRIMARY KEY, customer_id INTEGER, body TEXT)",
    "CREATE TABLE address_notes (id INTEGER PRIMARY KEY,"
    " address_id INTEGER REFERENCES addresses(id), body TEXT)",
)

ROWS: dict[str, list[dict[str, Any]]] = {
    "addresses": [
        {"id": 10, "street": "Home A", "city": "Aarhus"},  # customer 1's home, only theirs
        {"id": 11, "street": "Home B", "city": "Odense"},  # customer 2's home
        {"id": 20, "street": "Ship A", "city": "Vejle"},  # only customer 1's order ships here
        {"id": 21, "street": "Ship AB", "city": "Kolding"},  # customer 1's and customer 2's orders
        {"id": 22, "street": "Ship AW", "city": "Horsens"},  # customer 1's order and a warehouse
        {"id": 23, "street": "Home and ship", "city": "Skive"},  # customer 3's home and customer 1's order
    ],
    "customers": [
        {"id": 1, "name": "Anna", "address_id": 10, "created_at": OLD},
        {"id": 2, "name": "Bo", "address_id": 11, "created_at": OLD},
        {"id": 3, "name": "Cai", "address_id": 23, "created_at": NEW},
        {"id": 4, "name": "Dorte", "address_id": None, "created_at": OLD},
        {"id": 5, "name": "Ejnar", "address_id": 23, "created_at": OLD},  # shares customer 3's home
    ],
    "orders": [
        {"id": 100, "customer_id": 1, "shipping_address_id": 20, "ordered_at": OLD},
        {"id": 101, "customer_id": 1, "shipping_address_id": 21, "ordered_at": OLD},
        {"id": 102, "customer_id": 1, "shipping_address_id": None, "ordered_at": OLD},
        {"id": 103, "customer_id": 1, "shipping_address_id": 22, "ordered_at": OLD},
        {"id": 104, "customer_id": 1, "shipping_address_id": 23, "ordered_at": OLD},
        {"id": 200, "customer_id": 2, "shipping_address_id": 21, "ordered_at": NEW},
    ],
    "warehouses": [{"id": 1, "address_id": 22}],
    "order_notes": [
        {"id": 1, "order_id": 100, "customer_id": 1, "body": "old order"},
        {"id": 2, "order_id": 200, "customer_id": 2, "body": "new order"},
        {"id": 3, "order_id": None, "customer_id": 2, "body": "no order"},
    ],
    "support_notes": [
        {"id": 1, "customer_id": 1, "body": "called"},
        {"id": 2, "customer_id": 2, "body": "wrote"},
    ],
}


def _policy(
    pid: str, records: dict[str, str], retention: dict[str, Any], *locations: dict[str, Any]
) -> Policy:
    doc = {
        "id": pid,
        "description": f"{pid}: a category of the web-shop schema.",
        "legal_basis": {"basis": "contract", "gdpr": "Art. 6(1)(b) (contract)"},
        "rationale": "The join-path tests need exactly these rows, nothing more.",
        # The schema's timestamps are without time zone, written in UTC.
        "retention": {**retention, "anchor_time_zone": "UTC"} if "anchor" in retention else retention,
        "records": records,
        "erasure_request": {"action": "erase"},
        "cap": {"max_items": 100, "max_fraction": 1.0},
        "locations": list(locations),
    }
    return parse_policy(yaml.safe_dump(doc, sort_keys=False), f"{pid}.yaml")


ANON = {"street": {"strategy": "null"}, "city": {"strategy": "null"}}
YEAR = {"period": "P1Y", "counts_from": "event", "event": "sign-up", "anchor": "created_at"}
CUSTOMERS = {"table": "customers", "key": "id", "subject": "id"}
CUSTOMER_NAME = {
    "store": "database",
    "table": "customers",
    "action": "anonymise",
    "fields": {"name": {"strategy": "redact"}},
}


def customers_category(pid: str, table: str, via: list[str], **location: Any) -> Policy:
    """Customers by sign-up date: the name anonymised, and ``table`` reached through ``via``."""
    return _policy(
        pid, CUSTOMERS, YEAR, CUSTOMER_NAME, {"store": "database", "table": table, "via": via, **location}
    )


def customers_policy(shared: str = "keep") -> Policy:
    # Two hops through orders (only read) to the shipping addresses.
    via = ["customers.id -> orders.customer_id", "orders.shipping_address_id -> addresses.id"]
    return customers_category(
        "shop_customers", "addresses", via, action="anonymise", fields=ANON, shared=shared
    )


def home_policy() -> Policy:
    # Child -> parent: the row the customer references.
    via = ["customers.address_id -> addresses.id"]
    return customers_category("shop_homes", "addresses", via, action="anonymise", fields=ANON)


def notes_policy() -> Policy:
    return _policy(
        "shop_order_notes",
        {"table": "order_notes", "key": "id", "subject": "customer_id"},
        {
            "period": "P1Y",
            "counts_from": "event",
            "event": "the order",
            "anchor": "ordered_at",
            "anchor_via": ["order_notes.order_id -> orders.id"],
        },
        {"store": "database", "table": "order_notes", "action": "delete"},
    )


def support_policy() -> Policy:
    return _policy(
        "shop_support",
        {"table": "support_notes", "key": "id", "subject": "customer_id"},
        {"counts_from": "on_request_only", "event": "the customer's request"},
        {"store": "database", "table": "support_notes", "action": "delete"},
    )


def policy_set(*items: Policy) -> PolicySet:
    return PolicySet(tuple(items), {p.id: f"{p.id}.yaml" for p in items})


@pytest.fixture
def shop(empty_db: Engine) -> Engine:
    with empty_db.begin() as conn:
        for statement in SCHEMA:
            conn.exec_driver_sql(statement)
        meta = sa.MetaData()
        meta.reflect(conn)
        for table, rows in ROWS.items():
            t = meta.tables[table]
            conn.execute(t.insert(), [_typed(t, r) for r in rows])
    Ledger(empty_db).ensure_schema()
    HoldRegistry(empty_db).ensure_schema()
    return empty_db


def _typed(t: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name, value in row.items():
        if isinstance(value, str) and isinstance(t.c[name].type, sa.DateTime):
            out[name] = datetime.fromisoformat(value)
    return out


def context(engine: Engine, ps: PolicySet, **kw: Any) -> Any:
    check_against_schema(ps, reflect_schema(engine))
    return engine_context(engine, ps, now=NOW, pseudonym_key=PSEUDONYM_KEY, **kw)


def rows(engine: Engine, table: str) -> dict[int, tuple[Any, ...]]:
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))  # noqa: S608 - test table names
        return {r[0]: tuple(r[1:]) for r in found}


def test_two_hops_through_orders_anonymise_only_what_is_the_customers_own(shop: Engine) -> None:
    ps = policy_set(customers_policy())
    before = rows(shop, "orders")
    result = execute_step(ps.policies[0], "database", context(shop, ps, mode="subject", subject="1"))
    addresses = rows(shop, "addresses")
    assert addresses[20] == (None, None)  # only customer 1's order ships there
    assert addresses[21] == ("Ship AB", "Kolding")  # customer 2's order too: kept
    assert addresses[22] == ("Ship AW", "Horsens")  # a warehouse too: kept
    assert addresses[23] == ("Home and ship", "Skive")  # customer 3's home too: kept
    assert addresses[10] == ("Home A", "Aarhus")  # not on this path
    assert rows(shop, "orders") == before  # the orders were only read
    assert rows(shop, "customers")[1][0] == "[slettet]"
    assert rows(shop, "customers")[2][0] == "Bo"
    assert result.kept.get(Reason.SHARED_WITH_NOT_DUE) == 3
    assert result.remaining == 0 and result.verified
    with shop.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT count FROM retention_ledger WHERE action = 'keep' AND reason = :r"),
            {"r": Reason.SHARED_WITH_NOT_DUE.value},
        ).scalar_one()
    assert kept == 3


def test_path_rows_are_reached_before_the_records_are_deleted(shop: Engine) -> None:
    """The records table is listed first and deleted: the path's rows are still found (they go first)."""
    with shop.begin() as conn:
        conn.exec_driver_sql("DELETE FROM order_notes")
    deleting = _policy(
        "shop_orders",
        {"table": "orders", "key": "id", "subject": "customer_id"},
        {"period": "P1Y", "counts_from": "event", "event": "the order", "anchor": "ordered_at"},
        {"store": "database", "table": "orders", "action": "delete"},
        {
            "store": "database",
            "table": "addresses",
            "via": ["orders.shipping_address_id -> addresses.id"],
            "action": "anonymise",
            "fields": ANON,
        },
    )
    ps = policy_set(deleting)
    execute_step(ps.policies[0], "database", context(shop, ps))
    assert sorted(rows(shop, "orders")) == [200]
    addresses = rows(shop, "addresses")
    assert addresses[20] == (None, None)  # only old order 100 used it
    assert addresses[21] == ("Ship AB", "Kolding")  # new order 200 too
    assert addresses[22] == ("Ship AW", "Horsens")  # a warehouse too
    assert addresses[23] == ("Home and ship", "Skive")  # customer 3's home


def test_shared_anonymise_deletes_own_rows_and_anonymises_shared_ones(shop: Engine) -> None:
    """Customer 1's orders: deleted, except order 100, which a note references: anonymised."""
    via = ["customers.id -> orders.customer_id"]
    fields = {"shipping_address_id": {"strategy": "null"}}
    category = customers_category(
        "shop_orders_of", "orders", via, action="delete", shared="anonymise", fields=fields
    )
    ps = policy_set(category)
    result = execute_step(ps.policies[0], "database", context(shop, ps, mode="subject", subject="1"))
    orders = rows(shop, "orders")
    assert sorted(orders) == [100, 200]
    assert orders[100][1] is None  # anonymised, kept for the note that references it
    assert orders[200][1] == 21  # customer 2's order untouched
    assert result.erased == 4 and result.remaining == 0


def test_shared_erase_anonymises_shared_rows_too(shop: Engine) -> None:
    ps = policy_set(customers_policy(shared="erase"))
    execute_step(ps.policies[0], "database", context(shop, ps, mode="subject", subject="1"))
    addresses = rows(shop, "addresses")
    assert [addresses[i] for i in (20, 21, 22, 23)] == [(None, None)] * 4
    assert addresses[10] == ("Home A", "Aarhus") and addresses[11] == ("Home B", "Odense")


def test_child_to_parent_hop_and_null_reference_in_the_nightly_run(shop: Engine) -> None:
    ps = policy_set(home_policy())
    result = execute_step(ps.policies[0], "database", context(shop, ps))
    addresses = rows(shop, "addresses")
    # Customers 1, 2 and 4 signed up long ago (4 has no address: nothing to do, no crash);
    # customer 3 is new, so their home (23) stays although an old order of customer 1 ships there.
    assert addresses[10] == (None, None) and addresses[11] == (None, None)
    assert addresses[23] == ("Home and ship", "Skive")
    # 20-22 are shipping addresses, not homes: this path does not reach them.
    assert addresses[20] == ("Ship A", "Vejle") and addresses[21] == ("Ship AB", "Kolding")
    assert result.remaining == 0


def test_rows_behind_a_shared_step_are_kept(shop: Engine) -> None:
    """Customer -> home -> its notes: the notes of a home that a customer not due also uses stay,
    though the path reaches them from a due customer (sharing is checked where paths converge)."""
    with shop.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO address_notes (id, address_id, body) VALUES"
            " (1, 10, 'ring twice'), (2, 23, 'side door')"  # customer 1's home; the home 3 and 5 share
        )
    via = ["customers.address_id -> addresses.id", "addresses.id -> address_notes.address_id"]
    ps = policy_set(customers_category("shop_home_notes", "address_notes", via, action="delete"))
    result = execute_step(ps.policies[0], "database", context(shop, ps))
    assert sorted(rows(shop, "address_notes")) == [2]
    assert result.kept.get(Reason.SHARED_WITH_NOT_DUE) == 1
    assert result.remaining == 0


def test_a_held_customer_keeps_a_shared_row(shop: Engine) -> None:
    ps = policy_set(customers_policy())
    HoldRegistry(shop).add(subject="2", reason="dispute")
    execute_step(ps.policies[0], "database", context(shop, ps, mode="subject", subject="1"))
    addresses = rows(shop, "addresses")
    assert addresses[21] == ("Ship AB", "Kolding")
    assert addresses[20] == (None, None)


def test_a_table_without_a_date_is_dated_through_its_parent(shop: Engine) -> None:
    ps = policy_set(notes_policy())
    result = execute_step(ps.policies[0], "database", context(shop, ps))
    # Note 1 belongs to an old order (due), note 2 to a new one, note 3 has no order (never due).
    assert sorted(rows(shop, "order_notes")) == [2, 3]
    assert result.erased == 1


def test_the_nightly_plan_counts_records_without_a_date_to_count_from(shop: Engine) -> None:
    """Note 3 has no order (a NULL reference): never due, and the plan says how many such records
    there are; so does a record whose own anchor is NULL. A held record (note 4) is not counted."""
    with shop.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO order_notes (id, order_id, customer_id, body) VALUES (4, NULL, 3, 'orphan')"
        )
        conn.exec_driver_sql("UPDATE customers SET created_at = NULL WHERE id IN (4, 5)")
    HoldRegistry(shop).add(subject="3", reason="dispute")
    ps = policy_set(notes_policy(), home_policy())
    nightly = context(shop, ps)
    notes, homes = (plan_category(p, nightly) for p in ps.policies)
    assert (notes.undated, notes.records) == (1, 1)
    assert (homes.undated, homes.records) == (2, 2)  # customers 4 and 5; 1 and 2 are due
    assert plan_category(ps.policies[0], context(shop, ps, mode="subject", subject="2")).undated == 0
    summary = flow.run_all(context(shop, ps)).summary
    assert summary is not None and summary.undated == {"shop_homes": 2, "shop_order_notes": 1}
    assert Ledger(shop).summaries(1, mode="due")[0]["undated"] == dict(summary.undated)


def test_a_category_without_a_clock_is_erased_on_request_only(shop: Engine) -> None:
    ps = policy_set(support_policy())
    nightly = context(shop, ps)
    plan = plan_category(ps.policies[0], nightly)
    assert plan.records == 0 and plan.on_request_only
    execute_step(ps.policies[0], "database", nightly)
    assert sorted(rows(shop, "support_notes")) == [1, 2]
    execute_step(ps.policies[0], "database", context(shop, ps, mode="subject", subject="1"))
    assert sorted(rows(shop, "support_notes")) == [2]


def test_validate_explains_each_hop_and_its_constraint(shop: Engine) -> None:
    ps = policy_set(customers_policy(), home_policy(), notes_policy())
    lines = explain_paths(ps, reflect_schema(shop))
    assert (
        "shop_customers locations[1]: customers.id -> orders.customer_id "
        "(to the child rows, by constraint orders.customer_id -> customers.id)"
    ) in lines
    assert (
        "shop_customers locations[1]: orders.shipping_address_id -> addresses.id "
        "(to the parent rows, by constraint orders.shipping_address_id -> addresses.id)"
    ) in lines
    assert any(
        line.startswith("shop_order_notes retention.anchor_via: order_notes.order_id") for line in lines
    )


def _refused(engine: Engine, policy: Policy) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        check_against_schema(policy_set(policy), reflect_schema(engine))
    return e.value


def test_a_hop_that_is_not_a_real_reference_is_refused_naming_file_and_field(shop: Engine) -> None:
    # Joins the customer's id on the address id: same type, no constraint.
    wrong = customers_category(
        "shop_wrong", "addresses", ["customers.id -> addresses.id"], action="anonymise", fields=ANON
    )
    err = _refused(shop, wrong)
    assert (err.file, err.field) == ("shop_wrong.yaml", "locations[1].via[0]")
    assert "no foreign key constraint links customers.id and addresses.id" in str(err)


def test_deleting_rows_the_path_references_is_refused(shop: Engine) -> None:
    home = ["customers.address_id -> addresses.id"]
    err = _refused(shop, customers_category("shop_delete_home", "addresses", home, action="delete"))
    assert err.field == "locations[1].action"
    assert "use anonymise" in str(err)


def test_deleting_rows_that_reference_each_other_is_refused_naming_the_cycle(shop: Engine) -> None:
    """A customer referred by another (a self-reference) cannot be deleted while the other stays
    and the two cannot be deleted in any order once they reference each other: refused up front."""
    with shop.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE support_notes ADD COLUMN answer_to INTEGER REFERENCES support_notes(id)"
        )
    error = _refused(shop, support_policy())
    assert (error.file, error.field) == ("shop_support.yaml", "locations[0].action")
    assert "support_notes.answer_to -> support_notes.id ON DELETE NO ACTION" in str(error)
    assert "make one constraint ON DELETE SET NULL" in str(error)
    anonymised = _policy(
        "shop_support",
        {"table": "support_notes", "key": "id", "subject": "customer_id"},
        {"counts_from": "on_request_only", "event": "the customer's request"},
        {
            "store": "database",
            "table": "support_notes",
            "action": "anonymise",
            "fields": {"body": {"strategy": "redact"}},
        },
    )
    check_against_schema(policy_set(anonymised), reflect_schema(shop))


@pytest.mark.parametrize(
    ("via", "problem"),
    [
        (["orders.id -> addresses.id"], "hop [0] starts at table 'orders', but the path is at 'customers'"),
        (
            ["customers.address_id -> addresses.id", "addresses.id -> customers.address_id"],
            "returns to table",
        ),
        (["customers.id -> orders.customer_id"], "the path ends at table 'orders', not at 'addresses'"),
        (["customers.address_id => addresses.id"], "a hop is written 'table.column -> table.column'"),
    ],
)
def test_a_malformed_path_is_refused_when_the_policy_is_read(via: list[str], problem: str) -> None:
    with pytest.raises(PolicyError) as e:
        customers_category("shop_path", "addresses", via, action="anonymise", fields=ANON)
    assert e.value.file == "shop_path.yaml"
    assert e.value.field.startswith("locations[1].via")
    assert problem in str(e.value)
