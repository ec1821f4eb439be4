"""Database helpers shared by the ledger, the hold registry and the monitoring page.

A timestamp column type that is always timezone-aware UTC, the check that keeps table
names safe for DDL, and table creation that is safe against concurrent callers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from retention.errors import TerminalError

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware in UTC (naive values are refused)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value to store: UTC, naive on SQLite; TerminalError for a naive datetime."""
        if value is None:
            return None
        utc = aware_utc("timestamp", value)
        # SQLite keeps no offset; naive UTC text compares correctly as text
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value as a timezone-aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def aware_utc(name: str, value: datetime) -> datetime:
    """``value`` converted to UTC; TerminalError if it is not a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise TerminalError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def check_table_name(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier (it is used in DDL); TerminalError otherwise."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise TerminalError("table name must be a lower-case identifier of at most 48 characters")
    return name


def create_tables(conn: Connection, tables: Iterable[sa.Table]) -> None:
    """Create the tables and their indexes if missing, safely against concurrent callers.

    On PostgreSQL a transaction-scoped advisory lock serialises callers, because
    ``IF NOT EXISTS`` alone still races there; SQLite runs each DDL statement atomically.
    When everything exists no DDL runs at all: ``CREATE INDEX IF NOT EXISTS`` still locks
    its table on PostgreSQL, which would deadlock with a concurrent append.
    """
    tables = list(tables)
    if conn.dialect.name == "postgresql":
        key = "retention schema " + ",".join(t.name for t in tables)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    inspector = sa.inspect(conn)
    for table in tables:
        if inspector.has_table(table.name):
            existing = {index["name"] for index in inspector.get_indexes(table.name)}
        else:
            conn.execute(CreateTable(table, if_not_exists=True))
            existing = set()
        for index in table.indexes:
            if index.name not in existing:
                conn.execute(CreateIndex(index, if_not_exists=True))
