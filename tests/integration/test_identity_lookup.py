"""Finding a customer's internal id by an e-mail address or a phone number, on PostgreSQL and on SQLite.

The business schema is the reference world's; the rows are written here, so every expected
id and count is known. The policies are the reference deployment's, with the test fixture's
``_subject.yaml`` that declares the identity types (e-mail, phone).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from harness.world_schema import create_schema
from retention.errors import TerminalError
from retention.identity import SQLITE_DIGITS_FUNCTION, find_subjects
from retention.policy import PolicySet, load_policies

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "include" / "retention_policies"
WHEN = datetime(2026, 1, 5, 12, tzinfo=UTC)

SUBJECT_YAML = (POLICY_DIR / "_subject.yaml").read_text()

# id -> (e-mail, phone) as stored; what each customer's records are (table -> rows)
CUSTOMERS = {
    1: ("Anna.Berg@Example.DK", "+45 20 12 34 56"),
    2: ("shared@example.dk", "+45 30 30 30 30"),
    3: ("SHARED@example.dk", "+4530303030"),
    4: ("other@example.dk", None),
    5: (None, "(+45) 30-30-30-30"),
}
INVOICES = {1: 2, 2: 1, 3: 0, 4: 3, 5: 0}
LETTERS = {1: 3, 2: 0, 3: 2, 4: 0, 5: 1}


def policy_folder(tmp_path: Path, subject_yaml: str) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder)
    (folder / "_subject.yaml").write_text(subject_yaml, encoding="utf-8")
    return folder


@pytest.fixture
def policies(tmp_path: Path) -> PolicySet:
    return load_policies(policy_folder(tmp_path, SUBJECT_YAML))


@pytest.fixture
def business(empty_db: Engine) -> Iterator[Engine]:
    """The business schema with the customers above and their invoices and letters."""
    create_schema(empty_db)
    md = sa.MetaData()
    md.reflect(bind=empty_db, only=["customers", "invoices", "correspondence"])
    customers, invoices, letters = (md.tables[t] for t in ("customers", "invoices", "correspondence"))
    with empty_db.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {
                    "id": cid,
                    "customer_no": f"AK-{cid:06d}",
                    "name": f"Customer {cid}",
                    "email": email,
                    "phone": phone,
                    "address": "Vestergade 1, 8000 Aarhus C",
                    "created_at": WHEN,
                    "last_activity_at": WHEN,
                }
                for cid, (email, phone) in CUSTOMERS.items()
            ],
        )
        rows = [(cid, n) for cid, count in INVOICES.items() for n in range(count)]
        conn.execute(
            invoices.insert(),
            [
                {
                    "id": i,
                    "customer_id": cid,
                    "invoice_no": f"INV-{i}",
                    "invoice_date": date(2026, 1, 5),
                    "amount_dkk": 100,
                    "billing_name": "x",
                    "billing_address": "y",
                }
                for i, (cid, _n) in enumerate(rows, start=1)
            ],
        )
        rows = [(cid, n) for cid, count in LETTERS.items() for n in range(count)]
        conn.execute(
            letters.insert(),
            [
                {"id": i, "customer_id": cid, "subject": "s", "body": "b", "sent_at": WHEN, "direction": "in"}
                for i, (cid, _n) in enumerate(rows, start=1)
            ],
        )
    yield empty_db


def expected_held(policies: PolicySet, cid: int) -> dict[str, int]:
    held = dict.fromkeys(policies.ids, 0)
    held.update(customer_master_data=1, invoices=INVOICES[cid], correspondence=LETTERS[cid])
    return held


class Statements:
    """Every statement and its parameters that the engine sends while the recorder is attached."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.engine = engine

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        self.seen.append((statement, parameters))


def test_an_email_is_found_whatever_its_case(business: Engine, policies: PolicySet) -> None:
    found = find_subjects(business, policies, "email", "  anna.berg@EXAMPLE.dk ")
    assert found.identity == "email" and not found.more
    assert [m.subject for m in found.matches] == ["1"]
    match = found.matches[0]
    assert match.held == expected_held(policies, 1)
    assert list(match.held) == list(policies.ids), "categories in policy order"
    assert match.total == 1 + 2 + 3
    assert match.valid_id


def test_a_phone_number_is_compared_by_its_digits(business: Engine, policies: PolicySet) -> None:
    found = find_subjects(business, policies, "phone", "+45-2012 3456")
    assert [m.subject for m in found.matches] == ["1"]
    assert found.matches[0].held == expected_held(policies, 1)
    # digits are compared exactly: without the country code it is another number
    assert find_subjects(business, policies, "phone", "20 12 34 56").matches == ()


def test_a_customer_number_is_found_as_printed_on_a_letter(business: Engine, policies: PolicySet) -> None:
    found = find_subjects(business, policies, "customer_no", " AK-000003 ")  # copied with spaces
    assert [m.subject for m in found.matches] == ["3"]
    assert found.matches[0].held == expected_held(policies, 3)
    with pytest.raises(TerminalError):
        find_subjects(business, policies, "customer_no", "ak-000003")  # not the printed form


def test_no_match_is_an_empty_answer(business: Engine, policies: PolicySet) -> None:
    found = find_subjects(business, policies, "email", "nobody@example.dk")
    assert found.matches == () and not found.more


def test_customers_sharing_a_value_are_all_listed_with_their_own_counts(
    business: Engine, policies: PolicySet
) -> None:
    by_email = find_subjects(business, policies, "email", "Shared@Example.dk")
    assert [m.subject for m in by_email.matches] == ["2", "3"]
    for match in by_email.matches:
        assert match.held == expected_held(policies, int(match.subject))

    by_phone = find_subjects(business, policies, "phone", "45 30 30 30 30")
    assert [m.subject for m in by_phone.matches] == ["2", "3", "5"]
    assert [m.held["correspondence"] for m in by_phone.matches] == [0, 2, 1]


def test_more_matches_than_the_limit_say_so(business: Engine, policies: PolicySet) -> None:
    capped = find_subjects(business, policies, "phone", "+45 30303030", limit=2)
    assert [m.subject for m in capped.matches] == ["2", "3"] and capped.more
    exact = find_subjects(business, policies, "phone", "+45 30303030", limit=3)
    assert len(exact.matches) == 3 and not exact.more


@pytest.mark.parametrize(
    ("identity", "value", "problem"),
    [
        ("email", "anna.berg at example.dk", "not in the declared format"),
        ("email", "x" * 321 + "@example.dk", "longer than 320 characters"),
        ("phone", "call me maybe", "nothing is left after normalising"),
        ("phone", "+45 2012", "not in the declared format"),
        ("email", "", "a non-empty text value is required"),
    ],
)
def test_a_value_not_in_the_format_is_refused_without_repeating_it(
    business: Engine, policies: PolicySet, identity: str, value: str, problem: str
) -> None:
    with Statements(business) as statements, pytest.raises(TerminalError) as refused:
        find_subjects(business, policies, identity, value)
    message = str(refused.value)
    assert problem in message
    assert value.strip() not in message or not value.strip()
    assert "2012" not in message and "anna" not in message.lower()
    assert statements.seen == [], "a refused value never reaches the database"


def test_an_undeclared_identity_type_is_refused(business: Engine, policies: PolicySet) -> None:
    with pytest.raises(TerminalError, match="no identity type 'name' is declared"):
        find_subjects(business, policies, "name", "Anna Berg")


def test_the_value_is_a_bound_parameter_and_the_filter_runs_in_the_database(
    business: Engine, policies: PolicySet
) -> None:
    with Statements(business) as statements:
        find_subjects(business, policies, "phone", "+45 30 30 30 30")
        find_subjects(business, policies, "email", "Shared@Example.DK")
    for statement, _parameters in statements.seen:
        assert "4530303030" not in statement and "shared@" not in statement.lower()
    lookups = [(s, p) for s, p in statements.seen if "FROM customers" in s and "DISTINCT" in s]
    assert len(lookups) == 2
    (phone_sql, phone_params), (email_sql, email_params) = lookups
    digits = (
        "regexp_replace(customers.phone" if business.dialect.name == "postgresql" else SQLITE_DIGITS_FUNCTION
    )
    assert digits in phone_sql
    assert "lower(customers.email)" in email_sql
    values = [
        str(v) for p in (phone_params, email_params) for v in (p.values() if isinstance(p, dict) else p)
    ]
    assert "4530303030" in values and "shared@example.dk" in values


def test_an_identity_whose_table_or_column_is_missing_is_refused(business: Engine, tmp_path: Path) -> None:
    no_table = SUBJECT_YAML.replace(
        "table: customers\n    column: email", "table: clients\n    column: email"
    )
    policies = load_policies(policy_folder(tmp_path / "a", no_table))
    with pytest.raises(TerminalError, match="identity email: table 'clients' does not exist"):
        find_subjects(business, policies, "email", "anna.berg@example.dk")

    no_column = SUBJECT_YAML.replace("column: phone", "column: mobile")
    policies = load_policies(policy_folder(tmp_path / "b", no_column))
    with pytest.raises(TerminalError, match="identity phone: table 'customers' has no column 'mobile'"):
        find_subjects(business, policies, "phone", "+45 20 12 34 56")


def test_a_phone_lookup_can_use_an_expression_index_on_postgresql(
    fresh_db: Engine, policies: PolicySet
) -> None:
    """The digits expression is written with constants, so an index on exactly it serves a large table."""
    create_schema(fresh_db)
    with fresh_db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE INDEX customers_phone_digits ON customers (regexp_replace(phone, '[^0-9]+', '', 'g'))"
        )
    with Statements(fresh_db) as statements:
        assert find_subjects(fresh_db, policies, "phone", "+45 20 12 34 56").matches == ()
    statement, parameters = next((s, p) for s, p in statements.seen if "DISTINCT" in s)
    with fresh_db.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))
    assert "customers_phone_digits" in plan, plan
