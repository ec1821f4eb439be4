"""The blast-radius cap decides as a full count of the table would, reading only what it must."""

from __future__ import annotations

import math
from pathlib import Path

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from retention.adapters.database import DatabaseAdapter
from retention.cli import DEFAULT_FOLDER
from retention.engine import cap_exceeded, over_cap
from retention.policy import Policy, load_policies

BASE = load_policies(DEFAULT_FOLDER).get("correspondence")


def capped(max_items: int, max_fraction: float) -> Policy:
    return BASE.model_copy(
        update={"cap": BASE.cap.model_copy(update={"max_items": max_items, "max_fraction": max_fraction})}
    )


class CountingTable:
    """The two counts ``over_cap`` may ask for, of a table of ``rows`` rows; remembers the rows read."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.read = 0
        self.full_counts = 0

    def total(self, table: str) -> int:
        self.full_counts += 1
        self.read += self.rows
        return self.rows

    def total_at_least(self, table: str, rows: int) -> int:
        seen = min(self.rows, max(rows, 0))
        self.read += seen
        return seen


@given(
    rows=st.integers(0, 10_000),
    due=st.integers(0, 10_000),
    max_items=st.integers(1, 20_000),
    max_fraction=st.floats(0.001, 1.0),
)
def test_over_cap_decides_as_the_full_count_does(
    rows: int, due: int, max_items: int, max_fraction: float
) -> None:
    records = min(due, rows)  # the due records are rows of the table
    policy = capped(max_items, max_fraction)
    table = CountingTable(rows)
    why, total = over_cap(policy, records, table)  # type: ignore[arg-type]
    assert why == cap_exceeded(policy, records, rows)
    if why is None:
        # Within the cap: the table was read no further than the due records need.
        assert total is None and table.full_counts == 0
        assert table.read <= math.ceil(records / max_fraction)
    else:
        assert total == rows, "the approval form shows the whole table's count"


def test_total_at_least_stops_counting_at_the_bound(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/t.db")
    meta = sa.MetaData()
    t = sa.Table("correspondence", meta, sa.Column("id", sa.Integer, primary_key=True))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": i} for i in range(1, 51)])
    db = DatabaseAdapter(engine)
    assert [db.total_at_least("correspondence", n) for n in (0, 1, 49, 50, 51, 10_000)] == [
        0,
        1,
        49,
        50,
        50,
        50,
    ]
    assert db.total("correspondence") == 50
