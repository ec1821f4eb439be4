"""The database adapter on real PostgreSQL (and on SQLite, the demo's embedded store).

The schema here is deliberately not the reference world: the engine must work for any
schema a policy describes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import HoldSet
from retention.adapters.database import REDACTED, DatabaseAdapter, RowSelection, TableTarget
from retention.clock import Cutoff
from retention.errors import TerminalError, UnknownLocationError
from retention.locations import FieldRule

NOW = datetime(2026, 6, 15, tzinfo=UTC)
CUTOFF = Cutoff(
    instant=NOW - timedelta(days=365), inclusive=True, date_bound=(NOW - timedelta(days=365)).date()
)
KEY = b"k" * 32

meta = sa.MetaData()
people = sa.Table(
    "people",
    meta,
    sa.Column("pid", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("owner", sa.BigInteger, index=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), index=True),
    sa.Column("signed_on", sa.Date),
    sa.Column("name", sa.Text),
    sa.Column("mail", sa.Text),
    sa.Column("city", sa.Text),
)
notes = sa.Table(
    "notes",
    meta,
    sa.Column("nid", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("person_fk", sa.BigInteger, sa.ForeignKey("people.pid"), index=True),
    sa.Column("body", sa.Text),
)
N = 1000


def populate(engine: Engine) -> None:
    meta.create_all(engine)
    rows = []
    for i in range(1, N + 1):
        due = i % 2 == 0  # even ids are a year and a day (or more) old
        seen = NOW - timedelta(days=366 + i % 50) if due else NOW - timedelta(days=364 - i % 50)
        rows.append(
            {
                "pid": i,
                "owner": i % 10,
                "seen_at": seen,
                "signed_on": seen.date(),
                "name": f"Navn {i}",
                "mail": f"p{i}@example.dk",
                "city": "Aarhus",
            }
        )
    with engine.begin() as c:
        c.execute(people.insert(), rows)
        c.execute(notes.insert(), [{"nid": i, "person_fk": i, "body": f"note {i}"} for i in range(1, N + 1)])


@pytest.fixture
def db(empty_db: Engine) -> Engine:
    populate(empty_db)
    return empty_db


def due_selection(**kw: object) -> RowSelection:
    return RowSelection(
        table="people", key="pid", subject_column="owner", anchor="seen_at", cutoff=CUTOFF, **kw
    )  # type: ignore[arg-type]


def run(adapter: DatabaseAdapter, target: TableTarget) -> tuple[int, int, dict[str, int]]:
    erased = anonymised = 0
    kept: dict[str, int] = {}
    for batch in adapter.locate(target):
        out = adapter.erase(target, batch)
        erased += out.erased
        anonymised += out.anonymised
        for k, v in out.kept.items():
            kept[k] = kept.get(k, 0) + v
    return erased, anonymised, kept


def ids(engine: Engine, table: sa.Table) -> set[int]:
    with engine.connect() as c:
        return set(c.execute(sa.select(table.c[0])).scalars())


def test_delete_due_rows_children_first_in_key_range_batches(db: Engine) -> None:
    adapter = DatabaseAdapter(db, batch_size=37)
    sel = due_selection()
    child = TableTarget("c", sel, table="notes", action="delete", foreign_key="person_fk")
    parent = TableTarget("c", sel, table="people", action="delete")
    assert run(adapter, child)[0] == N // 2
    assert run(adapter, parent)[0] == N // 2
    assert ids(db, people) == {i for i in range(1, N + 1) if i % 2}
    assert ids(db, notes) == {i for i in range(1, N + 1) if i % 2}
    assert adapter.verify(parent).remaining == 0
    assert adapter.verify(child).remaining == 0
    # A second run finds nothing.
    assert list(adapter.locate(parent)) == []


def test_parent_before_children_is_refused_by_postgresql(fresh_db: Engine) -> None:
    db = fresh_db
    populate(db)
    adapter = DatabaseAdapter(db)
    parent = TableTarget("c", due_selection(), table="people", action="delete")
    batch = next(adapter.locate(parent))
    with pytest.raises(TerminalError, match="database refused"):
        adapter.erase(parent, batch)
    assert len(ids(db, people)) == N


def test_held_subjects_are_kept_even_when_the_hold_arrives_between_locate_and_erase(db: Engine) -> None:
    adapter = DatabaseAdapter(db, batch_size=10_000)
    holds = {"now": HoldSet()}
    sel = due_selection()
    target = TableTarget(
        "c", sel, table="notes", action="delete", foreign_key="person_fk", holds=lambda: holds["now"]
    )
    batch = next(adapter.locate(target))
    holds["now"] = HoldSet(subjects=frozenset({"4"}))
    out = adapter.erase(target, batch)
    held_due = {i for i in range(1, N + 1) if i % 2 == 0 and i % 10 == 4}
    assert out.erased == N // 2 - len(held_due)
    assert ids(db, notes) >= held_due
    check = adapter.verify(target)
    assert check.remaining == 0 and check.kept == len(held_due)

    parent = TableTarget("c", sel, table="people", action="delete", holds=lambda: holds["now"])
    erased, _, kept = run(adapter, parent)
    assert erased == N // 2 - len(held_due)
    assert ids(db, people) >= held_due


def test_anonymise_null_redact_pseudonym_is_idempotent_and_verified(db: Engine) -> None:
    adapter = DatabaseAdapter(db, batch_size=100)
    fields = {
        "name": FieldRule(strategy="pseudonym"),
        "mail": FieldRule(strategy="null"),
        "city": FieldRule(strategy="redact"),
    }
    target = TableTarget(
        "c", due_selection(), table="people", action="anonymise", fields=fields, pseudonym_key=KEY
    )
    before = adapter.verify(target)
    assert before.remaining == N // 2
    _, anonymised, _ = run(adapter, target)
    assert anonymised == N // 2
    assert adapter.verify(target).remaining == 0
    with db.connect() as c:
        rows = {r.pid: r for r in c.execute(sa.select(people))}
    for pid, row in rows.items():
        if pid % 2 == 0:
            assert row.name.startswith("psn:") and row.name != f"Navn {pid}"
            assert row.mail is None and row.city == REDACTED
        else:
            assert row.name == f"Navn {pid}" and row.mail == f"p{pid}@example.dk" and row.city == "Aarhus"
    # The same person gets the same pseudonym on a re-run; nothing is anonymised twice.
    assert run(adapter, target)[1] == 0
    assert len({rows[p].name for p in rows if p % 2 == 0}) == N // 2


def test_subject_selection_and_date_anchor(db: Engine) -> None:
    adapter = DatabaseAdapter(db)
    by_subject = RowSelection(
        table="people", key="pid", subject_column="owner", anchor="seen_at", subject="3"
    )
    assert adapter.count(by_subject) == N // 10
    by_date = RowSelection(
        table="people", key="pid", subject_column="owner", anchor="signed_on", cutoff=CUTOFF
    )
    # A date counts from the end of that day: only dates strictly before the cutoff's date are due.
    expected = sum(
        1 for i in range(2, N + 1, 2) if (NOW - timedelta(days=366 + i % 50)).date() < CUTOFF.date_bound
    )
    assert adapter.count(by_date) == expected
    records = [r for batch in adapter.iter_records(by_subject, ["mail"]) for r in batch]
    assert len(records) == N // 10 and all(set(r) == {"pid", "owner", "mail"} for r in records)


def test_bad_identifiers_and_subject_values_are_refused(db: Engine) -> None:
    adapter = DatabaseAdapter(db)
    with pytest.raises(UnknownLocationError, match="table 'peeple' does not exist"):
        adapter.table("peeple")
    with pytest.raises(UnknownLocationError, match="column 'nmae' does not exist"):
        adapter.column("people", "nmae")
    sel = RowSelection(
        table="people", key="pid", subject_column="owner", anchor="seen_at", subject="1 OR 1=1"
    )
    with pytest.raises(TerminalError, match="not valid for integer column"):
        adapter.count(sel)
