"""How the database adapter writes legal holds and keys into SQL, on PostgreSQL and on SQLite.

Held subjects are written into the statement as constants (not one bound parameter each),
a subject-mode selection carries only the selected subject's hold, and located keys come
back in key order; none of this may change which rows are erased or kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import HoldSet
from retention.adapters.database import DatabaseAdapter, RowSelection, TableTarget
from retention.clock import Cutoff

NOW = datetime(2026, 6, 15, tzinfo=UTC)
CUTOFF = Cutoff(
    instant=NOW - timedelta(days=30), inclusive=True, date_bound=(NOW - timedelta(days=30)).date()
)
ROWS = 2000

meta = sa.MetaData()
items = sa.Table(
    "items",
    meta,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("owner", sa.BigInteger, index=True),
    sa.Column("tag", sa.Text, index=True),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
)
TAGS = ("O'Brien", "plain", "x') OR ('1'='1", "æøå")


def populate(engine: Engine) -> None:
    meta.create_all(engine)
    rows = [
        {
            "id": i,
            "owner": i % 100,
            "tag": TAGS[i % len(TAGS)],
            # every third row is recent (not due)
            "seen_at": NOW - timedelta(days=1 if i % 3 == 0 else 60),
        }
        for i in range(1, ROWS + 1)
    ]
    with engine.begin() as c:
        c.execute(items.insert(), rows)


@pytest.fixture
def db(empty_db: Engine) -> Engine:
    populate(empty_db)
    return empty_db


def selection(subject_column: str = "owner", **kw: Any) -> RowSelection:
    return RowSelection(
        table="items", key="id", subject_column=subject_column, anchor="seen_at", cutoff=CUTOFF, **kw
    )


def remaining_ids(engine: Engine) -> set[int]:
    with engine.connect() as c:
        return set(c.execute(sa.select(items.c.id)).scalars())


class Parameters:
    """The largest number of bound parameters any statement on ``engine`` carried."""

    def __init__(self, engine: Engine) -> None:
        self.most = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if isinstance(params, dict):
            self.most = max(self.most, len(params))
        elif isinstance(params, list | tuple) and not many:
            self.most = max(self.most, len(params))


def test_thousands_of_held_subjects_are_constants_and_keep_exactly_their_rows(db: Engine) -> None:
    # 3,000 holds: owners 0..49 exist in the table, the rest do not; some are not even numbers.
    held = {str(n) for n in range(0, 50)} | {str(n) for n in range(1000, 3950)} | {"not-a-number", " 7 "}
    holds = HoldSet(subjects=frozenset(held))
    target = TableTarget("c", selection(), table="items", action="delete", holds=lambda: holds)
    adapter = DatabaseAdapter(db, batch_size=97)
    adapter.table("items")  # reflected before counting: the catalogue queries are not ours
    seen = Parameters(db)

    located: list[int] = []
    erased = 0
    for batch in adapter.locate(target):
        keys = [int(k) for k in batch.keys]
        assert keys == sorted(keys)
        located += keys
        erased += adapter.erase(target, batch).erased
    check = adapter.verify(target)

    due_not_held = {i for i in range(1, ROWS + 1) if i % 3 and i % 100 >= 50}
    assert located == sorted(due_not_held)
    assert erased == len(due_not_held) and check.remaining == 0
    assert check.kept == sum(1 for i in range(1, ROWS + 1) if i % 3 and i % 100 < 50)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - due_not_held
    assert seen.most < 10


def test_held_subjects_leave_the_others_erased_in_key_order(db: Engine) -> None:
    held = frozenset(str(n) for n in range(0, 100, 2)) | frozenset({"", "-1", "x"})
    target = TableTarget(
        "c", selection(), table="items", action="delete", holds=lambda: HoldSet(subjects=held)
    )
    adapter = DatabaseAdapter(db, batch_size=50)
    adapter.table("items")
    seen = Parameters(db)

    located: list[int] = []
    for batch in adapter.locate(target):
        located += [int(k) for k in batch.keys]
        adapter.erase(target, batch)

    due_not_held = [i for i in range(1, ROWS + 1) if i % 3 and (i % 100) % 2]
    assert located == due_not_held
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - set(due_not_held)
    assert adapter.verify(target).remaining == 0
    assert seen.most < 10


def test_text_subjects_with_quotes_are_held_safely(db: Engine) -> None:
    held = frozenset({"O'Brien", "x') OR ('1'='1"})
    target = TableTarget(
        "c", selection("tag"), table="items", action="delete", holds=lambda: HoldSet(subjects=held)
    )
    adapter = DatabaseAdapter(db, batch_size=300)

    erased = sum(adapter.erase(target, batch).erased for batch in adapter.locate(target))

    expected = {i for i in range(1, ROWS + 1) if i % 3 and TAGS[i % len(TAGS)] not in held}
    assert erased == len(expected)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - expected
    check = adapter.verify(target)
    assert check.remaining == 0
    assert check.kept == sum(1 for i in range(1, ROWS + 1) if i % 3 and TAGS[i % len(TAGS)] in held)


@pytest.mark.parametrize("subject_held", [False, True])
def test_a_subject_selection_carries_only_that_subjects_hold(db: Engine, subject_held: bool) -> None:
    others = frozenset(str(n) for n in range(100, 5000))
    holds = HoldSet(subjects=others | ({"7"} if subject_held else set()))
    target = TableTarget("c", selection(subject="7"), table="items", action="delete", holds=lambda: holds)
    adapter = DatabaseAdapter(db)
    adapter.table("items")
    statements: list[str] = []
    sa.event.listen(db, "before_cursor_execute", lambda *a: statements.append(a[2]))

    erased = sum(adapter.erase(target, batch).erased for batch in adapter.locate(target))
    check = adapter.verify(target)

    owned_due = {i for i in range(1, ROWS + 1) if i % 100 == 7 and i % 3}
    assert erased == (0 if subject_held else len(owned_due))
    assert (check.remaining, check.kept) == (0, len(owned_due) if subject_held else 0)
    assert remaining_ids(db) == set(range(1, ROWS + 1)) - (set() if subject_held else owned_due)
    # No statement spells out the thousands of other held subjects.
    assert max(len(s) for s in statements) < 2000


def test_the_registry_reads_the_same_holds_on_postgresql_and_sqlite(empty_db: Engine) -> None:
    """PostgreSQL reads the holds in force as two arrays; what is in force must not depend on it."""
    from retention.holds import HoldRegistry

    engine = empty_db
    registry = HoldRegistry(engine)
    registry.ensure_schema()
    day = timedelta(days=1)
    assert registry.current("invoices", NOW) == HoldSet()
    registry.add(reason="Retssag A", subject="17", now=NOW - day)
    registry.add(reason="Retssag B", subject="18", category="invoices", now=NOW - day)
    registry.add(reason="Retssag C", subject="19", category="documents", now=NOW - day)
    registry.add(reason="Tilsyn", prefix="12/34", now=NOW - day)
    registry.add(reason="Tilsyn", prefix="56", category="invoices", now=NOW - day)
    registry.add(reason="Udløbet", subject="20", until=NOW - day / 2, now=NOW - day)
    registry.release(registry.add(reason="Frigivet", subject="21", now=NOW - day), now=NOW - day / 2)
    assert registry.current("invoices", NOW) == HoldSet(
        subjects=frozenset({"17", "18"}), prefixes=("12/34", "56")
    )
    documents = HoldSet(subjects=frozenset({"17", "19"}), prefixes=("12/34",))
    assert registry.current("documents", NOW) == documents
