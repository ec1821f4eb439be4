"""A real run's database batches: key ranges named without reading the records (``named``).

The erase statement re-applies the whole selection to each range, so ranges must erase
exactly what located batches erase; these tests hold them to that on real PostgreSQL and
on SQLite, with dense, sparse and non-integer keys, and a hold that arrives mid-run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from retention.adapters.base import Batch, HoldSet
from retention.adapters.database import DatabaseAdapter, RowSelection, TableTarget
from retention.clock import Cutoff
from retention.locations import FieldRule

NOW = datetime(2026, 6, 15, tzinfo=UTC)
CUTOFF = Cutoff(
    instant=NOW - timedelta(days=365), inclusive=True, date_bound=(NOW - timedelta(days=365)).date()
)
N = 1200


def make_table(engine: Engine, *, key_type: sa.types.TypeEngine[object], keys: list[object]) -> sa.Table:
    """``rows(k, owner, seen_at)``: every third row is due; owner = position % 10."""
    meta = sa.MetaData()
    rows = sa.Table(
        "rows",
        meta,
        sa.Column("k", key_type, primary_key=True),
        sa.Column("owner", sa.BigInteger, index=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), index=True),
    )
    meta.create_all(engine)
    old, new = NOW - timedelta(days=400), NOW - timedelta(days=10)
    with engine.begin() as c:
        c.execute(
            rows.insert(),
            [{"k": k, "owner": i % 10, "seen_at": old if i % 3 == 0 else new} for i, k in enumerate(keys)],
        )
    return rows


@pytest.fixture
def db(empty_db: Engine) -> Engine:
    return empty_db


def target(holds: dict[str, HoldSet] | None = None) -> TableTarget:
    sel = RowSelection(table="rows", key="k", subject_column="owner", anchor="seen_at", cutoff=CUTOFF)
    state = holds if holds is not None else {"now": HoldSet()}
    return TableTarget("c", sel, table="rows", action="delete", holds=lambda: state["now"])


def left(engine: Engine, table: sa.Table) -> set[object]:
    with engine.connect() as c:
        return set(c.execute(sa.select(table.c.k)).scalars())


def erase_named(adapter: DatabaseAdapter, t: TableTarget) -> list[tuple[Batch[object], int]]:
    """Erase every named batch; (batch, rows it turned out to hold)."""
    done = []
    for batch in adapter.named(t):
        out = adapter.erase(t, batch)
        done.append((batch, out.erased))
    return done


def test_ranges_erase_exactly_the_due_rows_and_size_themselves(db: Engine) -> None:
    keys = list(range(1, N + 1))
    rows = make_table(db, key_type=sa.BigInteger().with_variant(sa.Integer, "sqlite"), keys=keys)
    due = {k for i, k in enumerate(keys) if i % 3 == 0}
    adapter = DatabaseAdapter(db, batch_size=40)

    done = erase_named(adapter, target())

    assert left(db, rows) == set(keys) - due
    assert sum(n for _, n in done) == len(due)
    assert all(batch.keys == [] and batch.span for batch, _ in done), "ranges, not located keys"
    # Sized from the selection's density, every range but the last holds about 40 rows.
    assert len(done) > 5 and all(30 <= n <= 50 for _, n in done[:-1]), [n for _, n in done]
    assert len(done) <= len(due) // 40 + 3
    assert adapter.verify(target()).remaining == 0
    assert list(adapter.named(target())) == [], "nothing selected: no range at all"


def test_sparse_keys_take_few_ranges_not_one_per_gap(db: Engine) -> None:
    # keys 10 apart, then a gap of a billion: ranges grow over empty key space
    keys = [k * 10 for k in range(1, N // 2 + 1)] + [10**9 + k for k in range(N // 2)]
    rows = make_table(db, key_type=sa.BigInteger(), keys=keys)
    due = {k for i, k in enumerate(keys) if i % 3 == 0}
    adapter = DatabaseAdapter(db, batch_size=100)

    done = erase_named(adapter, target())

    assert left(db, rows) == set(keys) - due
    assert len(done) < 40, f"{len(done)} ranges for {len(due)} due rows"


def test_text_keys_fall_back_to_located_batches(db: Engine) -> None:
    keys = [f"doc-{k:05d}" for k in range(N)]
    rows = make_table(db, key_type=sa.Text(), keys=keys)
    due = {k for i, k in enumerate(keys) if i % 3 == 0}
    adapter = DatabaseAdapter(db, batch_size=100)

    done = erase_named(adapter, target())

    assert all(batch.span is None and batch.count for batch, _ in done)
    assert left(db, rows) == set(keys) - due


def test_a_hold_that_arrives_mid_run_keeps_its_rows_and_is_counted_when_looking_again(db: Engine) -> None:
    keys = list(range(1, N + 1))
    rows = make_table(db, key_type=sa.BigInteger().with_variant(sa.Integer, "sqlite"), keys=keys)
    holds = {"now": HoldSet()}
    t = target(holds)
    adapter = DatabaseAdapter(db, batch_size=50)
    batches = adapter.named(t)
    first = next(batches)
    assert adapter.erase(t, first).erased > 0
    holds["now"] = HoldSet(subjects=frozenset({"3"}))
    for batch in batches:
        adapter.erase(t, batch)

    remaining = left(db, rows)
    held_due = {k for i, k in enumerate(keys) if i % 3 == 0 and i % 10 == 3}
    erased_before_hold = held_due - remaining
    assert erased_before_hold, "the first range erased some of owner 3's rows before the hold"
    assert held_due - erased_before_hold <= remaining, "after the hold none of its rows went"
    check = adapter.verify(t)
    assert check.remaining == 0
    assert check.kept == len(held_due - erased_before_hold)


def test_a_range_denser_than_its_estimate_is_pseudonymised_in_chunks(db: Engine) -> None:
    # 600 keys packed together, 600 spread over a billion: the first range, sized from the
    # average density, holds far more rows than a batch; it must still pseudonymise them all
    keys = list(range(1, N // 2 + 1)) + [k * 10**6 for k in range(1, N // 2 + 1)]
    make_table(db, key_type=sa.BigInteger(), keys=keys)
    with db.begin() as c:
        c.execute(sa.text("ALTER TABLE rows ADD COLUMN name TEXT"))
        c.execute(sa.text("UPDATE rows SET name = 'Navn ' || CAST(k AS TEXT)"))
    adapter = DatabaseAdapter(db, batch_size=50)
    sel = RowSelection(table="rows", key="k", subject_column="owner", anchor="seen_at", cutoff=CUTOFF)
    t = TableTarget(
        "c",
        sel,
        table="rows",
        action="anonymise",
        fields={"name": FieldRule(strategy="pseudonym")},
        pseudonym_key=b"k" * 32,
    )
    due = {k for i, k in enumerate(keys) if i % 3 == 0}

    held = [adapter.erase(t, batch).anonymised for batch in adapter.named(t)]

    assert max(held) > 50, "one range held more than a batch"
    assert sum(held) == len(due)
    with db.connect() as c:
        names = {k: name for k, name in c.execute(sa.text("SELECT k, name FROM rows"))}
    assert all(names[k].startswith("psn:") == (k in due) for k in keys)
    assert adapter.verify(t).remaining == 0


def test_keys_at_the_ends_of_bigint_are_walked(db: Engine) -> None:
    low, high = -(2**63), 2**63 - 1
    keys = [low, low + 1, 0, high - 1, high]
    rows = make_table(db, key_type=sa.BigInteger(), keys=keys)
    due = {k for i, k in enumerate(keys) if i % 3 == 0}

    erase_named(DatabaseAdapter(db, batch_size=1), target())

    assert left(db, rows) == set(keys) - due
