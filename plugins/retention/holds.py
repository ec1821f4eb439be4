"""The legal-hold registry: customers (subjects) or key/path prefixes that must not be erased.

One table of holds. A hold covers one subject or one prefix, in one category or in all
of them (category NULL), from its creation until it is released or its ``until`` passes.
Rows are never deleted: releasing a hold stamps ``released_at``, so the registry is its
own history. Every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from retention.adapters.base import HoldSet
from retention.errors import TerminalError
from retention.ledger import UtcDateTime, aware_utc, check_table_name, check_text, create_tables, db_errors
from retention.paths import check_relative


def _holds_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.Text),
        sa.Column("prefix", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("until", UtcDateTime),
        sa.Column("released_at", UtcDateTime),
        sa.CheckConstraint("(subject IS NULL) <> (prefix IS NULL)", name=f"ck_{name}_subject_xor_prefix"),
        sa.Index(f"ix_{name}_category", "category"),
    )


class HoldRegistry:
    """Legal holds in one table of ``engine``'s database: add, release, and read the holds in force."""

    def __init__(self, engine: Engine, table_name: str = "retention_legal_holds") -> None:
        self._engine = engine
        self._table = _holds_table(sa.MetaData(), check_table_name(table_name))

    def ensure_schema(self) -> None:
        """Create the holds table if it is missing; idempotent."""
        with db_errors("legal holds schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def add(
        self,
        *,
        reason: str,
        subject: str | None = None,
        prefix: str | None = None,
        category: str | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> int:
        """Hold one subject or one prefix (in one category, or in all if None); return the hold's id."""
        created_at = _now(now)
        values = {
            "reason": _reason(reason),
            "subject": _subject(subject, prefix),
            "prefix": None if prefix is None else check_relative(prefix, "hold prefix"),
            "category": _category(category),
            "until": _until(until, created_at),
            "created_at": created_at,
        }
        with db_errors("legal hold add"), self._engine.begin() as conn:
            return int(
                conn.execute(sa.insert(self._table).values(values).returning(self._table.c.id)).scalar_one()
            )

    def release(self, hold_id: int, now: datetime | None = None) -> None:
        """End a hold from ``now`` on; the row stays. Releasing a released hold changes nothing."""
        t = self._table
        released_at = _now(now)
        with db_errors("legal hold release"), self._engine.begin() as conn:
            stamp = (
                sa.update(t)
                .where(t.c.id == hold_id, t.c.released_at.is_(None))
                .values(released_at=released_at)
            )
            if conn.execute(stamp).rowcount == 0:
                if conn.execute(sa.select(t.c.id).where(t.c.id == hold_id)).first() is None:
                    raise TerminalError(f"there is no legal hold with id {hold_id}")

    def current(self, category: str, now: datetime) -> HoldSet:
        """The subjects and prefixes held at ``now`` in ``category``, by its own holds or global ones."""
        t = self._table
        wanted = _category(category)
        if wanted is None:
            raise TerminalError("holds in force are read for one category")
        query = sa.select(t.c.subject, t.c.prefix).where(
            *self._in_force(aware_utc("now", now)),
            sa.or_(t.c.category.is_(None), t.c.category == wanted),
        )
        subjects: set[str] = set()
        prefixes: set[str] = set()
        with db_errors("legal holds read"), self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Read before every erase: two arrays in one row cost a fraction of thousands of rows.
                held = query.subquery()
                arrays = sa.select(sa.func.array_agg(held.c.subject), sa.func.array_agg(held.c.prefix))
                both = conn.execute(arrays).one()
                subjects.update(s for s in both[0] or () if s is not None)
                prefixes.update(p for p in both[1] or () if p is not None)
            else:
                for subject, prefix in conn.execute(query):
                    if subject is not None:
                        subjects.add(subject)
                    else:
                        prefixes.add(prefix)
        return HoldSet(subjects=frozenset(subjects), prefixes=tuple(sorted(prefixes)))

    def _in_force(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        t = self._table
        # a hold released later than ``now`` was still in force at ``now``: evaluating a past
        # instant errs on the side of keeping
        return [
            sa.or_(t.c.released_at.is_(None), t.c.released_at > now),
            sa.or_(t.c.until.is_(None), t.c.until > now),
        ]

    def list(
        self, *, now: datetime | None = None, include_inactive: bool = False, include_subjects: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """Holds for reports, oldest first: in force at ``now`` unless ``include_inactive``.

        Each has id, kind (subject/prefix), category, reason, created_at, until and
        released_at; the held subject or prefix itself only with ``include_subjects``.
        """
        t = self._table
        query = sa.select(t).order_by(t.c.id)
        if not include_inactive:
            query = query.where(*self._in_force(_now(now)))
        with db_errors("legal holds read"), self._engine.connect() as conn:
            return [_report(row, include_subjects) for row in conn.execute(query).mappings()]


def _report(row: RowMapping, include_subjects: bool) -> dict[str, Any]:
    report = {
        "id": row["id"],
        "kind": "subject" if row["subject"] is not None else "prefix",
        "category": row["category"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "until": row["until"],
        "released_at": row["released_at"],
    }
    if include_subjects:
        report["subject"], report["prefix"] = row["subject"], row["prefix"]
    return report


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else aware_utc("now", now)


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise TerminalError("a legal hold needs a reason")
    stripped = reason.strip()
    check_text("hold reason", stripped)
    return stripped


def _subject(subject: str | None, prefix: str | None) -> str | None:
    if (subject is None) == (prefix is None):
        raise TerminalError("a legal hold covers exactly one of subject or prefix")
    if subject is not None and (not isinstance(subject, str) or not subject or subject != subject.strip()):
        # a padded subject would silently fail to match the records it is meant to protect
        raise TerminalError("hold subject must be non-empty text without surrounding whitespace")
    return subject


def _category(category: str | None) -> str | None:
    if category is not None and (
        not isinstance(category, str) or not category or category != category.strip()
    ):
        raise TerminalError("hold category must be non-empty text without surrounding whitespace")
    return category


def _until(until: datetime | None, created_at: datetime) -> datetime | None:
    if until is None:
        return None
    until = aware_utc("until", until)
    if until <= created_at:
        raise TerminalError("a legal hold's until must be later than its creation")
    return until
