"""Relations checked against the live schema, on real PostgreSQL and on SQLite (the demo's).

Each test writes a small schema in plain DDL (so the constraints are the database's own, as a
DBA would write them: inline ``REFERENCES`` and table constraints, unique constraints and unique
indexes), reflects it with ``reflect_schema`` and checks policies against it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from harness.world_schema import create_schema
from retention.adapters.database import reflect_schema
from retention.cli import validate
from retention.errors import PolicyError
from retention.policy import Policy, PolicySet, check_against_schema, load_policies, parse_policy

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"

CUSTOMERS = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"
ORDERS = (
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),"
    " ref INTEGER NOT NULL UNIQUE, code INTEGER, created_at TIMESTAMP)"
)


def lines(order_id: str = "order_id INTEGER NOT NULL REFERENCES orders(id)", constraint: str = "") -> str:
    """order_lines, its ``order_id`` column as given, and a table constraint if given."""
    tail = f", {constraint}" if constraint else ""
    return (
        "CREATE TABLE order_lines (id INTEGER PRIMARY KEY, customer_id INTEGER, created_at TIMESTAMP,"
        f" {order_id}{tail})"
    )


def ddl(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def policy(pid: str, table: str, *children: tuple[str, str], key: str = "id") -> Policy:
    """A policy deleting the due rows of ``table`` (records keyed by ``key``) and of each ``(child, fk)``."""
    doc: dict[str, Any] = {
        "id": pid,
        "description": f"The rows of {table}, for the relation tests.",
        "legal_basis": {"basis": "contract", "gdpr": "Art. 6(1)(b) (contract)"},
        "rationale": "Only what the relation tests need, nothing more.",
        "retention": {
            "period": "P1Y",
            "counts_from": "event",
            "event": "creation",
            "anchor": "created_at",
            "anchor_time_zone": "UTC",  # a timestamp without time zone, written in UTC
        },
        "records": {"table": table, "key": key, "subject": "customer_id"},
        "erasure_request": {"action": "erase"},
        "cap": {"max_items": 100, "max_fraction": 0.5},
        "locations": [{"store": "database", "table": table, "action": "delete"}]
        + [{"store": "database", "table": c, "foreign_key": fk, "action": "delete"} for c, fk in children],
    }
    return parse_policy(yaml.safe_dump(doc), f"{pid}.yaml")


def policies(*items: Policy) -> PolicySet:
    return PolicySet(tuple(items), {p.id: f"{p.id}.yaml" for p in items})


def refused(engine: Engine, ps: PolicySet) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        check_against_schema(ps, reflect_schema(engine))
    return e.value


ORDERS_AND_LINES = policies(policy("orders", "orders", ("order_lines", "order_id")))


def test_a_real_foreign_key_is_accepted(empty_db: Engine) -> None:
    ddl(empty_db, CUSTOMERS, ORDERS, lines())
    check_against_schema(ORDERS_AND_LINES, reflect_schema(empty_db))


def test_a_table_constraint_foreign_key_is_accepted(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,
        lines("order_id INTEGER NOT NULL", "CONSTRAINT fk_o FOREIGN KEY (order_id) REFERENCES orders(id)"),
    )
    check_against_schema(ORDERS_AND_LINES, reflect_schema(empty_db))


def test_a_child_without_the_foreign_key_constraint_is_refused(empty_db: Engine) -> None:
    ddl(empty_db, CUSTOMERS, ORDERS, lines("order_id INTEGER NOT NULL"))
    e = refused(empty_db, ORDERS_AND_LINES)
    assert (e.file, e.field) == ("orders.yaml", "locations[1].foreign_key")
    assert e.message == "no foreign key constraint order_lines.order_id -> orders.id in the database"


@pytest.mark.parametrize(
    ("reference", "has"),
    [
        ("customers(id)", "order_lines.order_id -> customers.id"),
        ("orders(ref)", "order_lines.order_id -> orders.ref"),
    ],
)
def test_a_foreign_key_to_another_table_or_column_is_refused(
    empty_db: Engine, reference: str, has: str
) -> None:
    ddl(empty_db, CUSTOMERS, ORDERS, lines(f"order_id INTEGER NOT NULL REFERENCES {reference}"))
    e = refused(empty_db, ORDERS_AND_LINES)
    assert e.field == "locations[1].foreign_key"
    assert e.message == (
        f"no foreign key constraint order_lines.order_id -> orders.id in the database; it has {has}"
    )


def test_a_records_key_that_is_not_unique_is_refused(empty_db: Engine) -> None:
    ddl(empty_db, CUSTOMERS, ORDERS)
    e = refused(empty_db, policies(policy("orders", "orders", key="code")))
    assert (e.file, e.field) == ("orders.yaml", "records.key")
    assert e.message.startswith("column orders.code is not a unique, not-null key: it is neither")


def test_a_unique_but_nullable_key_is_refused(empty_db: Engine) -> None:
    ddl(empty_db, CUSTOMERS, ORDERS, "CREATE UNIQUE INDEX ix_orders_code ON orders (code)")
    e = refused(empty_db, policies(policy("orders", "orders", key="code")))
    assert e.field == "records.key"
    assert e.message == (
        "column orders.code is not a unique, not-null key: it is unique but nullable: it needs NOT NULL"
    )


def test_a_unique_constraint_or_unique_index_on_a_not_null_column_is_accepted(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,  # ref: NOT NULL UNIQUE (a constraint)
        "CREATE TABLE visits (id INTEGER, customer_id INTEGER, created_at TIMESTAMP, no INTEGER NOT NULL)",
        "CREATE UNIQUE INDEX ix_visits_no ON visits (no)",
    )
    schema = reflect_schema(empty_db)
    check_against_schema(policies(policy("orders", "orders", key="ref")), schema)
    check_against_schema(policies(policy("visits", "visits", key="no")), schema)


def test_a_partial_unique_index_is_not_a_key(empty_db: Engine) -> None:
    ddl(
        empty_db,
        "CREATE TABLE visits (id INTEGER, customer_id INTEGER, created_at TIMESTAMP, no INTEGER NOT NULL)",
        "CREATE UNIQUE INDEX ix_visits_no ON visits (no) WHERE customer_id IS NOT NULL",
    )
    e = refused(empty_db, policies(policy("visits", "visits", key="no")))
    assert e.field == "records.key"


def test_a_composite_primary_key_is_not_a_key(empty_db: Engine) -> None:
    ddl(
        empty_db,
        "CREATE TABLE visits (id INTEGER NOT NULL, customer_id INTEGER NOT NULL, created_at TIMESTAMP,"
        " PRIMARY KEY (id, customer_id))",
    )
    e = refused(empty_db, policies(policy("visits", "visits")))
    assert e.message.endswith("it is only part of the composite primary key (id, customer_id)")


def test_a_cascade_into_an_unnamed_table_is_refused_with_the_chain(empty_db: Engine) -> None:
    cascading = lines("order_id INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE")
    ddl(empty_db, CUSTOMERS, ORDERS, cascading)
    e = refused(empty_db, policies(policy("orders", "orders")))
    assert (e.file, e.field) == ("orders.yaml", "locations[0].action")
    assert e.message.startswith(
        "deleting from orders cascades to orders -> order_lines, which no policy names"
    )
    assert "(ON DELETE CASCADE of order_lines.order_id -> orders.id)" in e.message


def test_a_cascade_into_a_table_another_policy_names_is_accepted(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,
        lines("order_id INTEGER NOT NULL", "FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE"),
    )
    schema = reflect_schema(empty_db)
    check_against_schema(policies(policy("orders", "orders"), policy("order_lines", "order_lines")), schema)
    check_against_schema(ORDERS_AND_LINES, schema)


def test_a_two_hop_cascade_is_refused_naming_both_hops(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,
        lines("order_id INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE"),
        "CREATE TABLE line_notes (id INTEGER PRIMARY KEY,"
        " line_id INTEGER REFERENCES order_lines(id) ON DELETE CASCADE, body TEXT)",
    )
    e = refused(empty_db, ORDERS_AND_LINES)
    assert e.field == "locations[0].action"
    assert e.message.startswith(
        "deleting from orders cascades to orders -> order_lines -> line_notes, which no policy names"
    )
    assert "(ON DELETE CASCADE of line_notes.line_id -> order_lines.id)" in e.message


def test_set_null_into_an_unnamed_table_is_refused(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,
        "CREATE TABLE audit (id INTEGER PRIMARY KEY,"
        " order_id INTEGER REFERENCES orders(id) ON DELETE SET NULL)",
    )
    e = refused(empty_db, policies(policy("orders", "orders")))
    assert e.message.startswith("deleting from orders cascades to orders -> audit, which no policy names")
    assert "(ON DELETE SET NULL of audit.order_id -> orders.id)" in e.message


def test_restrict_and_no_action_are_accepted(empty_db: Engine) -> None:
    ddl(
        empty_db,
        CUSTOMERS,
        ORDERS,
        "CREATE TABLE audit (id INTEGER PRIMARY KEY,"
        " order_id INTEGER REFERENCES orders(id) ON DELETE RESTRICT)",
        "CREATE TABLE audit2 (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id))",
    )
    check_against_schema(policies(policy("orders", "orders")), reflect_schema(empty_db))


def test_the_reference_world_and_the_shipped_policies_pass(empty_db: Engine) -> None:
    create_schema(empty_db)
    check_against_schema(load_policies(POLICY_DIR), reflect_schema(empty_db))
    assert validate(POLICY_DIR, empty_db.url.render_as_string(hide_password=False)).ids


@pytest.mark.parametrize(
    ("field", "value"), [("table", "clients"), ("column", "mail"), ("subject", "client_id")]
)
def test_an_identity_type_the_schema_lacks_is_refused(empty_db: Engine, field: str, value: str) -> None:
    create_schema(empty_db)
    shipped = load_policies(POLICY_DIR)
    email = shipped.subject.identities[0].model_copy(update={field: value})
    subject = shipped.subject.model_copy(update={"identities": [email]})
    e = refused(empty_db, dataclasses.replace(shipped, subject=subject))
    assert (e.file, e.field) == ("_subject.yaml", f"identities[0].{field}")
    assert repr(value) in str(e)


def test_an_empty_database_refuses_the_policies_naming_the_table(empty_db: Engine) -> None:
    e = refused(empty_db, load_policies(POLICY_DIR))
    assert e.field == "records.table"
