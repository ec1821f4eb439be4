"""Find a customer's internal id by a value they are known by (an e-mail address, a phone number).

A privacy request usually names the customer by such a value; the erasure DAG needs the
internal id. ``find_subjects`` looks the value up in the column an ``IdentityType`` of
``_subject.yaml`` names (``retention.subject``) and returns the distinct subject ids it
belongs to, with what the policy set's categories hold about each (record counts), so that
ops can tell one customer from another before triggering an erasure.

The value is personal data. It is normalised and checked by the identity type, then compared
in the database as a bound parameter only: it never enters SQL text, a log line, an error
message (database errors are reduced to their class and code by ``retention.dberrors``) or
anything that is returned. Table and column names come from the validated models and are
checked against the live schema; an identity whose table or columns do not exist is refused.

How the column is compared follows the identity's ``normalise``:

- ``none`` / ``strip``: the column equals the value;
- ``casefold``: ``lower(column)`` equals the lower-cased value (an index on ``lower(column)``
  serves it);
- ``digits``: the column with every character but 0-9 removed equals the value's digits:
  ``regexp_replace(column, '[^0-9]+', '', 'g')`` on PostgreSQL (an expression index on exactly
  that serves it), a deterministic SQL function registered on the connection on SQLite. The
  filter always runs in the database, never over rows fetched into Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retention.dberrors import db_errors
from retention.errors import TerminalError
from retention.policy import PolicySet
from retention.subject import IdentityType

MAX_MATCHES = 20
"""How many customers one lookup shows at most (``Found.more`` says when there were more)."""

SQLITE_DIGITS_FUNCTION = "retention_digits"
"""The SQL function that keeps only the digits 0-9 of a text, registered on SQLite connections."""

_NON_DIGITS = re.compile(r"[^0-9]+")
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class SubjectMatch:
    """One customer the value belongs to: the internal id and what each category holds about them."""

    subject: str
    """The internal id, as text (an integer column's value in its canonical decimal form)."""
    held: dict[str, int]
    """Category id -> how many of its records (rows of ``records.table``) name the subject; policy order."""
    valid_id: bool
    """Whether the id has the form an erasure request accepts (``PolicySet.subject``)."""

    @property
    def total(self) -> int:
        return sum(self.held.values())


@dataclass(frozen=True)
class Found:
    """The answer of one lookup: at most ``limit`` matches, in id order, and whether there were more."""

    identity: str
    """The identity type's name (never the value)."""
    matches: tuple[SubjectMatch, ...]
    more: bool
    """True if more customers than ``limit`` share the value (only the first ``limit`` are listed)."""


def find_subjects(
    engine: Engine, policies: PolicySet, identity_name: str, value: object, *, limit: int = MAX_MATCHES
) -> Found:
    """The customers whose ``identity_name`` is ``value``, with their record counts per category.

    TerminalError if the identity type is not declared, the value is not acceptable for it
    (the message never repeats the value), its table or columns do not exist, or a records
    table of the policy set is missing; TransientError if the database is unavailable.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    identity = policies.subject.identity(identity_name)
    wanted = identity.check(value)
    with db_errors(f"customer lookup by {identity.name}"), engine.connect() as conn:
        tables = _reflect(conn, identity, policies)
        subjects = _matching_subjects(conn, tables[identity.table], identity, wanted, limit + 1)
        more = len(subjects) > limit
        subjects = subjects[:limit]
        counts = {
            policy.id: _counts(conn, tables[policy.records.table], policy.records.subject, subjects)
            for policy in policies.policies
        }
    matches = tuple(
        SubjectMatch(
            subject=s,
            held={category: per_subject.get(s, 0) for category, per_subject in counts.items()},
            valid_id=_valid_id(policies, s),
        )
        for s in subjects
    )
    return Found(identity.name, matches, more)


def _reflect(conn: Connection, identity: IdentityType, policies: PolicySet) -> dict[str, sa.Table]:
    """The identity's table and every records table, reflected; TerminalError naming what is missing."""
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names()) | set(inspector.get_view_names())
    if identity.table not in existing:
        raise TerminalError(f"identity {identity.name}: table {identity.table!r} does not exist")
    for policy in policies.policies:
        if policy.records.table not in existing:
            raise TerminalError(
                f"category {policy.id}: records table {policy.records.table!r} does not exist"
            )
    needed = {identity.table, *(p.records.table for p in policies.policies)}
    metadata = sa.MetaData()
    metadata.reflect(bind=conn, only=sorted(needed), views=True)
    table = metadata.tables[identity.table]
    for column in (identity.column, identity.subject):
        if column not in table.c:
            raise TerminalError(
                f"identity {identity.name}: table {identity.table!r} has no column {column!r}"
            )
    for policy in policies.policies:
        if policy.records.subject not in metadata.tables[policy.records.table].c:
            raise TerminalError(
                f"category {policy.id}: records table {policy.records.table!r} "
                f"has no column {policy.records.subject!r}"
            )
    return dict(metadata.tables)


def _compared(conn: Connection, column: sa.Column[Any], normalise: str) -> sa.ColumnElement[Any]:
    """The column as the identity's normalised value is compared with it (see the module's list)."""
    if normalise == "casefold":
        return sa.func.lower(column)
    if normalise != "digits":
        return column
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Constants, not parameters: an expression index on exactly this expression can serve it.
        return sa.func.regexp_replace(
            column, sa.literal_column("'[^0-9]+'"), sa.literal_column("''"), sa.literal_column("'g'")
        )
    if dialect == "sqlite":
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - an open connection always has its driver connection
            raise TerminalError("the SQLite connection is closed")
        driver.create_function(SQLITE_DIGITS_FUNCTION, 1, _digits, deterministic=True)
        digits: sa.ColumnElement[Any] = getattr(sa.func, SQLITE_DIGITS_FUNCTION)(column)
        return digits
    raise TerminalError(f"a 'digits' identity cannot be searched on {dialect} (PostgreSQL or SQLite only)")


def _digits(text: object) -> str | None:
    return None if text is None else _NON_DIGITS.sub("", str(text))


def _matching_subjects(
    conn: Connection, table: sa.Table, identity: IdentityType, wanted: str, limit: int
) -> list[str]:
    """Up to ``limit`` distinct subject ids whose identity column matches, in the subject column's order."""
    subject = table.c[identity.subject]
    compared = _compared(conn, table.c[identity.column], identity.normalise)
    query = (
        sa.select(subject)
        .distinct()
        .where(compared == sa.bindparam("wanted", wanted, type_=sa.Text()), subject.is_not(None))
        .order_by(subject)
        .limit(limit)
    )
    return [str(v) for v in conn.execute(query).scalars()]


def _counts(
    conn: Connection, table: sa.Table, subject_column: str, subjects: Sequence[str]
) -> dict[str, int]:
    """Subject id -> how many rows of ``table`` name it (only the subjects that have any)."""
    col = table.c[subject_column]
    values = _values_for(col, subjects)
    if not values:
        return {}
    query = sa.select(col, sa.func.count()).where(col.in_(values)).group_by(col)
    return {str(v): int(n) for v, n in conn.execute(query)}


def _values_for(col: sa.Column[Any], subjects: Iterable[str]) -> list[Any]:
    """The ids as the column's values: an integer column only takes the canonical text of an integer."""
    try:
        integers = col.type.python_type is int
    except NotImplementedError:
        integers = False
    if integers:
        return sorted({int(s) for s in subjects if _CANONICAL_INT.fullmatch(s)})
    return sorted(set(subjects))


def _valid_id(policies: PolicySet, subject: str) -> bool:
    try:
        policies.subject.check(subject)
    except TerminalError:
        return False
    return True
