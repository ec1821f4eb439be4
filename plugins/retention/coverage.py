"""The coverage report: what looks like personal data but no policy covers (issue #17).

A new table or column with names, e-mails or phone numbers that no policy mentions would be kept
forever without anyone noticing. ``database_coverage`` reflects the business database and lists:

- **tables no policy names** (not the system's own: ledger, legal holds, kept records, and any the
  caller names): a ``table`` finding when its name says it holds people (``customers``,
  ``kunder``) or a column of it looks personal, and a ``column`` finding for each column whose
  name looks personal (``retention.coverage_patterns``: name, e-mail, phone, address, CPR, date
  of birth, in English and Danish) or whose sampled values do (e-mail, Danish phone and CPR
  patterns, counted on at most ``sample`` non-NULL values of each text column);
- **columns of tables a policy names but does not delete** (only anonymised, or only read on a
  path or as an identity): the personal-looking columns no policy names (not in any anonymise
  ``fields``, hop, template, identity, key, subject, anchor or deadline).

A table a policy deletes from is covered as a whole. Sampled values are matched and dropped one
by one: a finding carries the table and column, the pattern and the count of matches, never a
value. The file stores' part (S3 prefixes, archive directories no template covers) is in
``retention.coverage_stores``; both return ``Finding`` values and print one line each.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retention.coverage_patterns import (
    BIRTH_DATE,
    CPR,
    PHONE,
    VALUE_PATTERNS,
    column_name_kind,
    table_name_looks_personal,
    value_patterns,
)
from retention.dberrors import db_errors
from retention.locations import DatabaseLocation, Hop
from retention.paths import placeholders
from retention.policy import PolicySet
from retention.schema import ColumnInfo, SchemaInfo

DEFAULT_SAMPLE = 200
"""Non-NULL values read from each text column of a table to check for personal-looking values."""

SYSTEM_TABLES: tuple[str, ...] = (
    "retention_ledger",
    "retention_ledger_head",
    "retention_legal_holds",
    "retention_kept_records",
    "retention_tombstones",
    "retention_pseudonym_keys",
    "retention_leases",
    "retention_intent_items",
)
"""The retention system's own tables under their default names (``Ledger`` and its head,
``HoldRegistry``, ``KeptRecords``, ``Tombstones``, ``Keyring``, ``Leases``, ``IntentItems``): never
reported. A deployment that renames them passes the names as ``skip``."""

Kind = Literal["table", "column", "prefix", "directory"]


@dataclass(frozen=True)
class Finding:
    """Something that looks personal but that no policy covers: where, and why it looks so.

    ``place`` is ``table``, ``table.column``, ``bucket/prefix/`` or ``store:directory/``; ``why``
    names the pattern and counts (matches in the sample, objects or files), never a value."""

    kind: Kind
    place: str
    why: str

    def line(self) -> str:
        return f"uncovered {self.kind} {self.place}: {self.why}"


@dataclass
class Cover:
    """What the policies name in the database: the tables they delete from (covered whole), the
    tables they anonymise, every table they name, and the columns they name per table."""

    deleted: set[str] = field(default_factory=set)
    anonymised: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    columns: dict[str, set[str]] = field(default_factory=dict)

    def name(self, table: str, *columns: str) -> None:
        self.tables.add(table)
        self.columns.setdefault(table, set()).update(columns)

    def hops(self, hops: Iterable[Hop]) -> None:
        for hop in hops:
            self.name(hop.source, hop.source_column)
            self.name(hop.target, hop.target_column)


def cover_of(policy_set: PolicySet) -> Cover:
    """Every table and column the policy set names, and how its rows are erased."""
    cover = Cover()
    for policy in policy_set.policies:
        rec = policy.records
        cover.name(rec.table, rec.key, rec.subject, *(policy.deadline.columns() if policy.deadline else ()))
        cover.hops(policy.anchor_path())
        if policy.retention.anchor is not None:
            cover.name(policy.anchor_table(), policy.retention.anchor)
        for loc in policy.locations:
            if isinstance(loc, DatabaseLocation):
                cover.name(loc.table, *loc.fields)
                cover.hops(loc.hops(rec.table, rec.key))
                (cover.deleted if loc.action == "delete" else cover.anonymised).add(loc.table)
            else:
                cover.hops(loc.hops(rec.table))
                cover.name(loc.naming_table(rec.table), *placeholders(loc.template))
    for identity in policy_set.subject.identities:
        cover.name(identity.table, identity.column, identity.subject)
    return cover


def database_coverage(
    engine: Engine,
    policy_set: PolicySet,
    *,
    sample: int = DEFAULT_SAMPLE,
    skip: Collection[str] = (),
    schema: SchemaInfo | None = None,
) -> list[Finding]:
    """What looks personal in the database but no policy covers, tables in name order.

    ``skip`` names tables that are not the business's (besides ``SYSTEM_TABLES``) and
    ``table.column`` columns a human has judged (a finding accepted on purpose); ``schema`` is
    the reflected schema if the caller has it (``reflect_schema``), else it is reflected here.
    Reads at most ``sample`` values per text column checked (in a read-only transaction on
    PostgreSQL); writes nothing.
    """
    if sample < 0:
        raise ValueError("sample must be at least 0")
    if schema is None:
        from retention.adapters.database import reflect_schema

        schema = reflect_schema(engine)
    cover = cover_of(policy_set)
    skipped = set(SYSTEM_TABLES) | {s for s in skip if "." not in s}
    left_out = {s for s in skip if "." in s}
    findings: list[Finding] = []
    with db_errors("coverage report: opening a read-only transaction"), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        sampler = _Sampler(conn, sample)
        for table in sorted(t for t in schema.tables if t not in skipped and t not in cover.deleted):
            columns = {c: i for c, i in schema.columns(table).items() if f"{table}.{c}" not in left_out}
            if table in cover.tables:
                findings.extend(_named_table(table, columns, cover, sampler))
            else:
                findings.extend(_unnamed_table(table, columns, sampler))
        conn.rollback()
    return findings


def _unnamed_table(table: str, columns: Mapping[str, ColumnInfo], sampler: _Sampler) -> list[Finding]:
    """A table no policy names: it, and each of its columns that looks personal."""
    found = [f for f in (_column(table, c, info, sampler, "") for c, info in columns.items()) if f]
    people = table_name_looks_personal(table)
    if not found and not people:
        return []
    because = [f"{len(found)} of its {len(columns)} columns look personal"]
    if people:
        because.insert(0, "its name says it holds people")
    return [Finding("table", table, f"no policy names it; {'; '.join(because)}"), *found]


def _named_table(
    table: str, columns: Mapping[str, ColumnInfo], cover: Cover, sampler: _Sampler
) -> list[Finding]:
    """A table the policies name but never delete from: its personal-looking columns they do not name."""
    if table in cover.anonymised:
        gap = f"table {table} is anonymised, not deleted, and no policy's fields name this column"
    else:
        gap = f"table {table} is only read by the policies (a path or an identity), never erased"
    named = cover.columns.get(table, set())
    found = (_column(table, c, info, sampler, gap) for c, info in columns.items() if c not in named)
    return [f for f in found if f]


def _column(table: str, column: str, info: ColumnInfo, sampler: _Sampler, gap: str) -> Finding | None:
    """A finding if the column's name or its sampled values look personal, else None."""
    kind = _type_kind(info.type)
    by_name = column_name_kind(column, allowed=_NAME_KINDS[kind])
    counts = sampler.sample(table, column, cast=kind == "other") if kind in ("text", "other") else None
    why: list[str] = []
    if by_name:
        why.append(f"its name looks like {by_name}")
    if counts is not None and counts.matched():
        why.append(f"sampled values: {counts.describe()}")
    if not why:
        return None
    if gap:
        why.append(gap)
    return Finding("column", f"{table}.{column}", "; ".join(why))


TypeKind = Literal["text", "number", "temporal", "none", "other"]

_ANY = None
_NAME_KINDS: dict[TypeKind, tuple[str, ...] | None] = {
    "text": _ANY,
    "other": _ANY,
    "number": (PHONE, CPR),
    "temporal": (BIRTH_DATE,),
    "none": (),
}
"""Which kinds a column's name may say it holds, by its type: a number can be a phone or CPR
number, a date a date of birth; a boolean or a UUID holds none of them."""


def _type_kind(sqltype: Any) -> TypeKind:
    """The column's type as the report sees it (``other``: a type without a Python type, such as
    SQLite's untyped columns, or one holding structured text: JSON, arrays)."""
    try:
        py = sqltype.python_type
    except (NotImplementedError, AttributeError):
        return "other"
    if py is bool or issubclass(py, (uuid.UUID, bytes)):
        return "none"
    if issubclass(py, str):
        return "text"
    if issubclass(py, (int, float, decimal.Decimal)):
        return "number"
    if issubclass(py, (dt.date, dt.time, dt.timedelta)):
        return "temporal"
    return "other"


@dataclass(frozen=True)
class Counts:
    """How many of ``sampled`` values matched each value pattern."""

    sampled: int
    matches: Mapping[str, int]

    def matched(self) -> bool:
        return any(self.matches.values())

    def describe(self) -> str:
        """``e-mail 3 of 3, phone 1 of 3``: the patterns that matched, in report order."""
        return ", ".join(
            f"{p} {self.matches[p]} of {self.sampled}" for p in VALUE_PATTERNS if self.matches.get(p)
        )


class _Sampler:
    """Reads at most ``limit`` non-NULL values of a column and counts the patterns they match."""

    def __init__(self, conn: Connection, limit: int) -> None:
        self._conn = conn
        self._limit = limit

    def sample(self, table: str, column: str, *, cast: bool) -> Counts:
        if self._limit == 0:
            return Counts(0, {})
        col: sa.ColumnClause[Any] = sa.column(column)
        value: sa.ColumnElement[Any] = sa.cast(col, sa.Text) if cast else col
        query = sa.select(value).select_from(sa.table(table)).where(col.is_not(None)).limit(self._limit)
        matches: Counter[str] = Counter()
        sampled = 0
        with db_errors(f"coverage report: sampling {table}.{column}"):
            for row in self._conn.execute(query):
                sampled += 1
                matches.update(value_patterns(str(row[0])))
        return Counts(sampled, dict(matches))
