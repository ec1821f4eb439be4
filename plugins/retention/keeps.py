"""Records a file step kept in this run: their rows must stay, as the index of the files they name.

A file step that keeps an item (a legal hold on its path, a storage lock, a key that cannot be
used safely) notes the records that named it here; the database pass of the same run leaves
exactly those rows (and the rows that reference them) and erases the rest of the category.
So one item that must stay keeps only itself and its index, never a whole category.

The table lives beside the ledger. It holds internal record keys, not personal data in the
clear; it is working state of a run, not the record of what happened (the ledger is): a run
clears its own rows when it ends, and every run start clears rows of runs older than two days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, check_table_name, create_tables
from retention.results import Reason

STALE_AFTER = timedelta(days=2)
"""Rows of runs older than this are cleared at the next run's start (a run that died left them)."""
_CHUNK = 1000


def _kept_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("record_key", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Index(f"ix_{name}_run_category", "run_id", "category"),
    )


class KeptRecords:
    """The records each run's file steps kept, per category, with why."""

    def __init__(self, engine: Engine, table_name: str = "retention_kept_records") -> None:
        self._engine = engine
        self._table = _kept_table(sa.MetaData(), check_table_name(table_name))

    def ensure_schema(self) -> None:
        """Create the table if it is missing; idempotent."""
        with db_errors("kept records schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def add(self, run_id: str, category: str, kept: Mapping[Reason, Iterable[str]]) -> int:
        """Note the record keys kept for each reason; returns how many notes were written."""
        now = datetime.now(UTC)
        rows = [
            {
                "run_id": run_id,
                "category": category,
                "record_key": key,
                "reason": reason.value,
                "recorded_at": now,
            }
            for reason, keys in kept.items()
            for key in sorted(set(keys))
        ]
        if not rows:
            return 0
        with db_errors("kept records write"), self._engine.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                conn.execute(sa.insert(self._table), rows[start : start + _CHUNK])
        return len(rows)

    def of(self, run_id: str, category: str) -> dict[str, Reason]:
        """Record key -> why it was kept (the first reason noted), for one category of one run."""
        t = self._table
        query = (
            sa.select(t.c.record_key, t.c.reason)
            .where(t.c.run_id == run_id, t.c.category == category)
            .order_by(t.c.id)
        )
        out: dict[str, Reason] = {}
        with db_errors("kept records read"), self._engine.connect() as conn:
            for key, reason in conn.execute(query):
                out.setdefault(str(key), Reason(reason))
        return out

    def clear(self, run_id: str, *, now: datetime | None = None) -> int:
        """Remove the notes of ``run_id`` and of every run older than ``STALE_AFTER``; returns how many."""
        t = self._table
        stale = (now or datetime.now(UTC)) - STALE_AFTER
        with db_errors("kept records clear"), self._engine.begin() as conn:
            done = conn.execute(sa.delete(t).where(sa.or_(t.c.run_id == run_id, t.c.recorded_at < stale)))
        return int(done.rowcount or 0)
