"""The business-database adapter (SQLAlchemy Core; PostgreSQL in production, SQLite for the demo).

Set-based and batched by key ranges of the records table: a batch is a range
``(lo, hi]`` of its key, erased with one statement per table that re-applies the
whole selection (age, subject, holds), so a row that stopped being due between
naming the range and erasing it is never touched. A real run's ranges are named
without reading the records (``named``); a dry run locates them with one keyset
query each (``locate``), which also counts and fingerprints the keys.
Child tables are erased before the rows they reference. Anonymisation is an
``UPDATE`` of named columns that only touches values not yet anonymised, which
makes it idempotent and lets ``verify`` prove it by counting what is left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError, OperationalError

from retention.adapters.base import (
    PATH_KEY,
    PATH_SUBJECT,
    Batch,
    EraseOutcome,
    HoldSet,
    HoldSource,
    Record,
    VerifyOutcome,
    no_holds,
)
from retention.clock import Cutoff
from retention.dberrors import db_errors
from retention.errors import TerminalError, TransientError, UnknownLocationError, UnsafeTargetError
from retention.journal import EraseJournal, JournalTag
from retention.locations import DatabaseLocation, FieldRule, Hop
from retention.paths import is_prefix, naming_prefixes, parses, placeholders, render
from retention.pseudonym import pseudonymise
from retention.results import Reason
from retention.schema import ColumnInfo, ForeignKeyInfo, SchemaInfo, TableInfo, normalise_ondelete
from retention.stores import TargetInputs

REDACTED = "[slettet]"
PSEUDONYM_PREFIX = "psn:"

KeyRange = tuple[Any, Any]
"""``(lo, hi]`` of the records table's key; ``lo`` is None for the first batch."""


@dataclass(frozen=True)
class RowSelection:
    """Which rows of a records table are selected: by age, by subject, or both."""

    table: str
    key: str
    subject_column: str
    anchor: str
    cutoff: Cutoff | None = None
    """Only rows due under this cutoff; None selects regardless of age."""
    subject: str | None = None
    """Only this subject's rows; None selects every subject."""
    not_due: bool = False
    """Select the rows that are *not* due under ``cutoff`` (used to report what is kept)."""
    excluded: frozenset[str] = frozenset()
    """Record keys left out: rows kept as the index of files this run kept."""
    anchor_path: tuple[Hop, ...] = ()
    """The hops from the records table to the table holding ``anchor`` (none: the records table)."""
    never_due: bool = False
    """The category has no retention clock: nothing is due by age (only requests erase it)."""
    anchor_zone: str | None = None
    """The zone an anchor of type timestamp without time zone is written in
    (``retention.anchor_time_zone``); None: UTC (SQLite, written through SQLAlchemy from UTC)."""


@dataclass(frozen=True)
class TableTarget:
    """One database location of a category: the action on a table for a selection of records."""

    category: str
    selection: RowSelection
    table: str
    action: Literal["delete", "anonymise"]
    foreign_key: str | None = None
    fields: Mapping[str, FieldRule] = field(default_factory=dict)
    hops: tuple[Hop, ...] = ()
    """The path from the records table to ``table`` (used for a ``via`` location)."""
    shared: Literal["keep", "erase", "anonymise"] = "keep"
    """For a ``via`` location: what happens to rows that records not erased now also reach."""
    via: bool = False
    """The location declares a path (``via``): its rows may be shared with other records."""
    holds: HoldSource = no_holds
    pseudonym_key: bytes | None = None
    own_tables: frozenset[str] = frozenset()
    """Every table of the category: references from them are its own business, not a reason to keep."""
    records_deleted: bool = False
    """The category deletes its records (not anonymises): records still referenced from outside stay,
    and so do their children."""


def build_target(location: DatabaseLocation, inputs: TargetInputs) -> TableTarget:
    """The target of one database location: the action on its table for the run's selection."""
    return TableTarget(
        category=inputs.category,
        selection=inputs.selection,
        table=location.table,
        action=location.action,
        foreign_key=location.foreign_key,
        fields=location.fields,
        hops=location.hops(inputs.selection.table, inputs.selection.key),
        shared=location.shared,
        via=location.via is not None,
        holds=inputs.holds,
        pseudonym_key=inputs.pseudonym_key,
        own_tables=inputs.tables,
        records_deleted=inputs.records_deleted,
    )


def reflect_columns(engine: Engine, tables: Sequence[str] | None = None) -> dict[str, dict[str, ColumnInfo]]:
    """Table name -> {column name: ColumnInfo} for the database's tables (or the named ones that exist)."""
    try:
        inspector = sa.inspect(engine)
        names = [t for t in inspector.get_table_names() if tables is None or t in tables]
        return {
            t: {
                c["name"]: ColumnInfo(c["type"], bool(c.get("nullable", True)))
                for c in inspector.get_columns(t)
            }
            for t in names
        }
    except OperationalError as e:
        raise TransientError(f"database not reachable: {type(e.orig).__name__}") from None


def reflect_schema(engine: Engine) -> SchemaInfo:
    """Every table of the database's default schema: columns, keys, unique columns and foreign keys.

    All tables, not only the ones the policies name: the cascade check needs the foreign keys of
    the tables that reference them. A few catalogue queries on PostgreSQL (SQLAlchemy's
    multi-table reflection), a few PRAGMAs per table on SQLite. SQLite's foreign keys (and their
    ON DELETE rules) are read from ``PRAGMA foreign_key_list``: SQLAlchemy parses the rules out of
    the table's DDL and misses them on a column's own ``REFERENCES ... ON DELETE CASCADE``.
    Database errors are classified by ``dberrors``.
    """
    with db_errors("reading the database schema"), engine.connect() as conn:
        inspector = sa.inspect(conn)
        names = inspector.get_table_names()
        if not names:
            return SchemaInfo({}, dialect=conn.dialect.name)
        columns = inspector.get_multi_columns(filter_names=names)
        pks = {
            t: tuple(pk["constrained_columns"])
            for (_, t), pk in inspector.get_multi_pk_constraint(filter_names=names).items()
        }
        unique = _unique_columns(
            inspector.get_multi_unique_constraints(filter_names=names),
            inspector.get_multi_indexes(filter_names=names),
        )
        if conn.dialect.name == "sqlite":
            fks = {t: _sqlite_foreign_keys(conn, t, pks) for t in names}
        else:
            default = inspector.default_schema_name
            fks = {
                t: tuple(_foreign_key(fk, default) for fk in found)
                for (_, t), found in inspector.get_multi_foreign_keys(filter_names=names).items()
            }
    return SchemaInfo(
        {
            t: TableInfo(
                columns={
                    c["name"]: ColumnInfo(c["type"], bool(c.get("nullable", True)))
                    for c in columns.get((None, t), [])
                },
                primary_key=pks.get(t, ()),
                unique=unique.get(t, frozenset()),
                foreign_keys=fks.get(t, ()),
            )
            for t in names
        },
        dialect=engine.dialect.name,
    )


def _unique_columns(
    constraints: Mapping[tuple[str | None, str], Sequence[Any]],
    indexes: Mapping[tuple[str | None, str], Sequence[Any]],
) -> dict[str, frozenset[str]]:
    """Table -> the columns unique on their own: single-column UNIQUE constraints and unique indexes.

    A partial index (``WHERE``) or an expression index does not make its column unique.
    """
    found: dict[str, set[str]] = {}
    for (_, table), ucs in constraints.items():
        for uc in ucs:
            if len(uc["column_names"]) == 1:
                found.setdefault(table, set()).add(uc["column_names"][0])
    for (_, table), ixs in indexes.items():
        for ix in ixs:
            cols = ix["column_names"]
            options = ix.get("dialect_options", {})
            partial = any(k.endswith("_where") and v is not None for k, v in options.items())
            if ix.get("unique") and len(cols) == 1 and cols[0] is not None and not partial:
                found.setdefault(table, set()).add(cols[0])
    return {t: frozenset(cols) for t, cols in found.items()}


def _foreign_key(fk: Any, default_schema: str | None) -> ForeignKeyInfo:
    """A reflected foreign key; a referred table in another schema is named ``schema.table``."""
    schema = fk.get("referred_schema")
    table = fk["referred_table"] if schema in (None, default_schema) else f"{schema}.{fk['referred_table']}"
    return ForeignKeyInfo(
        columns=tuple(fk["constrained_columns"]),
        referred_table=table,
        referred_columns=tuple(fk["referred_columns"]),
        ondelete=normalise_ondelete((fk.get("options") or {}).get("ondelete")),
    )


def _sqlite_foreign_keys(
    conn: Connection, table: str, pks: Mapping[str, tuple[str, ...]]
) -> tuple[ForeignKeyInfo, ...]:
    """``table``'s foreign keys from ``PRAGMA foreign_key_list``; a key that names no referred
    column references the referred table's primary key."""
    rows = conn.execute(
        sa.text('SELECT id, seq, "table", "from", "to", on_delete FROM pragma_foreign_key_list(:t)'),
        {"t": table},
    ).all()
    grouped: dict[int, list[Any]] = {}
    for row in sorted(rows, key=lambda r: (r[0], r[1])):
        grouped.setdefault(int(row[0]), []).append(row)
    out: list[ForeignKeyInfo] = []
    for parts in grouped.values():
        referred = str(parts[0][2])
        to = [r[4] for r in parts]
        out.append(
            ForeignKeyInfo(
                columns=tuple(str(r[3]) for r in parts),
                referred_table=referred,
                referred_columns=pks.get(referred, ()) if all(c is None for c in to) else tuple(map(str, to)),
                ondelete=normalise_ondelete(parts[0][5]),
            )
        )
    return tuple(out)


class DatabaseAdapter:
    """Locate, erase and verify rows of one business database.

    ``batch_size`` is the rows one transaction erases: large enough that commits and
    ledger entries are a small share of the work, small enough to hold locks briefly.
    """

    store = "database"

    def __init__(
        self, engine: Engine, *, batch_size: int = 50_000, journal: EraseJournal | None = None
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.journal = journal
        """Where each batch transaction notes what it erased (``retention.journal``); None: nowhere."""
        self.statements = 0
        self._tables: dict[str, sa.Table] = {}
        self._reflected = False
        self._schema: SchemaInfo | None = None

    # -- schema -----------------------------------------------------------------------------------

    def table(self, name: str) -> sa.Table:
        """The reflected table; an unknown name raises ``UnknownLocationError``.

        The first call reflects every table of the default schema at once (SQLAlchemy's
        multi-table reflection: a few catalogue queries instead of several per table); a name
        that is not among them (a view, a table created since) is reflected on its own.
        """
        if name not in self._tables:
            try:
                if not self._reflected:
                    metadata = sa.MetaData()
                    metadata.reflect(bind=self.engine)
                    self._tables.update(metadata.tables)
                    self._reflected = True
                if name not in self._tables:
                    self._tables[name] = sa.Table(name, sa.MetaData(), autoload_with=self.engine)
            except NoSuchTableError:
                raise UnknownLocationError(f"table {name!r} does not exist") from None
            except OperationalError as e:
                raise TransientError(f"database not reachable: {type(e.orig).__name__}") from None
        return self._tables[name]

    def column(self, table: str, name: str) -> sa.Column[Any]:
        t = self.table(table)
        if name not in t.c:
            raise UnknownLocationError(f"column {name!r} does not exist in table {table!r}")
        return t.c[name]

    # -- the interface ----------------------------------------------------------------------------

    def locate(self, target: TableTarget) -> Iterator[Batch[KeyRange]]:
        """Yield key ranges of the selected, not held records (that still need the action)."""
        sel = target.selection
        key = self.column(sel.table, sel.key)
        conds = self._conditions(target, target.holds())
        last: Any = None
        while True:
            q = sa.select(key).where(*conds).order_by(key).limit(self.batch_size)
            if last is not None:
                q = q.where(key > last)
            keys = self._run(lambda c, q=q: _fetch_keys(c, q))
            if not keys:
                return
            yield Batch(items=[(last, keys[-1])], keys=[str(k) for k in keys])
            last = keys[-1]

    def named(self, target: TableTarget) -> Iterator[Batch[KeyRange]]:
        """Yield key ranges that together cover the selected records, without fetching them.

        A real run's batches: ``erase`` re-applies the whole selection (age, subject, holds) to
        its range, so a range is as safe as a list of located keys, and locating first would
        fetch every due key once more. One aggregate over the selection gives its smallest and
        largest key and its count; the ranges run between them, sized for ``batch_size`` rows
        at the selection's average density and then from the rows each range held. Keys that
        are not integers cannot be cut into ranges: those targets get the located batches.
        """
        sel = target.selection
        key = self.column(sel.table, sel.key)
        if _python_type(key) is not int:
            yield from self.locate(target)
            return
        conds = self._conditions(target, target.holds())
        # ``key + 0``: a bare min()/max() lets PostgreSQL walk the key index until the first
        # match from each end, which reads every newer row when the due rows are the oldest.
        # As an expression it is one pass over the selection, by the anchor's index or a scan.
        q = sa.select(sa.func.count(), sa.func.min(key + 0), sa.func.max(key + 0)).where(*conds)
        count, first, last = self._run(lambda c: c.execute(q).one())
        if not count:
            return
        span = int(last) - int(first) + 1
        width = max(1, span * self.batch_size // int(count))
        walk = _RangeWalk(lo=int(first) - 1, end=int(last), width=width, rows=self.batch_size)
        while walk.lo < walk.end:
            lo, hi = walk.lo, min(walk.lo + walk.width, walk.end)
            text = f"{sel.table}.{sel.key} in ({lo}, {hi}]"
            # The first range is open below: first - 1 may not fit the key's column type.
            yield Batch(items=[(None if lo < first else lo, hi)], keys=[], span=text, observe=walk.observe)
            walk.lo = hi

    def erase(self, target: TableTarget, batch: Batch[KeyRange]) -> EraseOutcome:
        """Delete or anonymise the batch's rows that are still selected and not held right now."""
        holds = target.holds()
        outcome = EraseOutcome()
        for lo, hi in batch.items:
            conds = [*self._conditions(target, holds), *self._range(target.selection, lo, hi)]
            erased, anonymised = self._run(
                lambda c, conds=conds: self._erase_range(c, target, conds, holds, batch.tag), write=True
            )
            outcome.erased += erased
            outcome.anonymised += anonymised
        if batch.observe is not None:
            batch.observe(outcome.erased + outcome.anonymised)
        # A key range never counted its rows: its held ones are counted when looking again.
        short = outcome.erased + outcome.anonymised < batch.count
        if batch.span is None and target.table == target.selection.table and short:
            held = self._count_held(target, holds, batch)
            if held:
                outcome.keep(Reason.LEGAL_HOLD, held)
        return outcome

    def _erase_range(
        self,
        conn: Connection,
        target: TableTarget,
        conds: list[sa.ColumnElement[bool]],
        holds: HoldSet,
        tag: JournalTag | None,
    ) -> tuple[int, int]:
        """One transaction: the range's rows erased (and the shared rows it reaches anonymised), and
        what that did noted in the erase journal, so that it commits with them or not at all."""
        done = self._apply(conn, target, conds, holds)
        erased, anonymised = (done, 0) if target.action == "delete" else (0, done)
        if target.via and target.action == "delete" and target.shared == "anonymise":
            anonymised += self._anonymise_shared(conn, target, conds, holds)
        if self.journal is not None and tag is not None and (erased or anonymised):
            self.statements += 1
            self.journal.write(conn, tag, erased, anonymised)
        return erased, anonymised

    def verify(self, target: TableTarget) -> VerifyOutcome:
        """Count the selected rows still present (or not anonymised), the held ones kept, and the
        ones kept because rows outside the category still reference them (a hold counts first)."""
        holds = target.holds()
        held = self._held_condition(target.selection, holds)
        referenced = self._referenced(target)
        if target.table == target.selection.table and held is not None:
            # One pass over the selection counts all three: held, referenced, and the rest.
            rec = self.table(target.table)
            free = sa.not_(held)
            ref = referenced if referenced is not None else sa.false()
            q = (
                sa.select(
                    sa.func.count().filter(free & sa.not_(ref)),
                    sa.func.count().filter(held),
                    sa.func.count().filter(free & ref),
                )
                .select_from(rec)
                .where(*self._conditions(target, HoldSet(), references=False))
            )
            remaining, kept, blocked = self._run(lambda c: c.execute(q).one())
            return VerifyOutcome(remaining=int(remaining), kept=int(kept), referenced=int(blocked))
        if target.via:
            return self._verify_path(target, holds)
        remaining = self._count(target, self._conditions(target, holds))
        kept = 0
        if holds.subjects:
            only_held = self._conditions(target, HoldSet(), only_subjects=holds.subjects, references=False)
            kept = self._count(target, only_held)
        return VerifyOutcome(remaining=remaining, kept=kept, referenced=self._count_referenced(target, holds))

    def naming_not_erasable(
        self,
        selection: RowSelection,
        holds: HoldSet,
        template: str,
        keys: Sequence[str],
        hops: Sequence[Hop] = (),
    ) -> set[str]:
        """Of ``keys``, those that a record of ``selection``'s table names through ``template``
        (exactly, or through a prefix for a directory template) although the selection, with the
        holds, would not erase it now. Set-based: the keys are read back into column values
        (``paths.parses``), looked up in one indexed query a chunk, and the rows found rendered again.

        With ``hops`` the template is filled from the rows of the path's last table: a row names
        for the records that reach it, so it may go only if records the selection erases reach it
        and no other record does (a row no record reaches names for no one that may go: it stays).
        """
        table = hops[-1].target if hops else selection.table
        names = list(dict.fromkeys(placeholders(template)))
        cols = [self.column(table, n) for n in names]
        exact = not is_prefix(template)
        candidates: set[tuple[Any, ...]] = set()
        for key in keys:
            for text in [key] if exact else naming_prefixes(key):
                for values in parses(template, text):
                    row = _coerced_row(cols, [values[n] for n in names])
                    if row is None:
                        # A column that is neither text nor integer cannot be read back: keep.
                        return set(keys)
                    if row:
                        candidates.add(row)
        if not candidates:
            return set()
        conds = self._selection_conditions(selection, holds)
        erasable: sa.ColumnElement[bool] = sa.func.coalesce(
            sa.and_(*conds) if conds else sa.true(), sa.false()
        )
        if hops:
            others = sa.func.coalesce(self.reach(hops, [sa.not_(erasable)]), sa.false())
            erasable = sa.and_(sa.func.coalesce(self.reach(hops, [erasable]), sa.false()), sa.not_(others))
        found: list[tuple[Any, ...]] = []
        ordered = sorted(candidates, key=repr)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            match = cols[0].in_([c[0] for c in chunk]) if len(cols) == 1 else sa.tuple_(*cols).in_(chunk)
            q = sa.select(*cols).where(match, sa.not_(erasable))
            found += self._run(lambda c, q=q: [tuple(r) for r in c.execute(q)])
        return _named_keys(template, names, found, keys, exact)

    def schema(self) -> SchemaInfo:
        """The live schema (reflected once per adapter): which tables reference which."""
        if self._schema is None:
            self._schema = reflect_schema(self.engine)
        return self._schema

    def _referenced(self, target: TableTarget) -> sa.ColumnElement[bool] | None:
        """Where the category deletes its records: those that rows of another category still reference.

        Those rows stay (``blocked_by_reference``): the referencing rows are kept for a reason of
        their own (a hold, a storage lock, not due), and deleting what they reference would fail,
        or cascade into them. References from the category's own tables are its own to erase.
        """
        if not target.records_deleted:
            return None
        records = target.selection.table
        rec = self.table(records)
        exists = []
        for child, fk in self.schema().referencing(records):
            if child in target.own_tables or child == records or len(fk.columns) != 1:
                continue
            ref = self.table(child).alias(f"referencing_{child}")  # never correlated with an enclosing query
            link = ref.c[fk.columns[0]] == rec.c[fk.referred_columns[0]]
            exists.append(sa.exists(sa.select(sa.literal(1)).select_from(ref).where(link)))
        return sa.or_(*exists) if exists else None

    def _count_referenced(self, target: TableTarget, holds: HoldSet) -> int:
        referenced = self._referenced(target)
        if referenced is None:
            return 0
        conds = [*self._selection_conditions(target.selection, holds), referenced]
        q = sa.select(sa.func.count()).select_from(self.table(target.selection.table)).where(*conds)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    # -- helpers for the planner ------------------------------------------------------------------

    def count(self, selection: RowSelection, holds: HoldSet | None = None) -> int:
        """How many records the selection holds (excluding held subjects if ``holds`` given)."""
        t = self.table(selection.table)
        conds = self._selection_conditions(selection, holds or HoldSet())
        q = sa.select(sa.func.count()).select_from(t).where(*conds)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    def count_undated(self, selection: RowSelection, holds: HoldSet) -> int:
        """How many records (not held) have no date to count from: a NULL anchor or, through the
        anchor's path, a NULL reference, no row reached, or a NULL date on a row reached."""
        anchor_table = selection.anchor_path[-1].target if selection.anchor_path else selection.table
        anchor = self.column(anchor_table, selection.anchor)
        undated: sa.ColumnElement[bool] = anchor.is_(None)
        if selection.anchor_path:
            dated = sa.func.coalesce(self._back(selection.anchor_path, [anchor.is_not(None)]), sa.false())
            missing = sa.func.coalesce(self._back(selection.anchor_path, [anchor.is_(None)]), sa.false())
            undated = sa.or_(sa.not_(dated), missing)
        conds = self._selection_conditions(dataclasses.replace(selection, cutoff=None), holds)
        t = self.table(selection.table)
        q = sa.select(sa.func.count()).select_from(t).where(*conds, undated)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    def total(self, table: str) -> int:
        """Every row of ``table`` (a full count: only where nothing less will do)."""
        t = self.table(table)
        return int(self._run(lambda c: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()))

    def total_at_least(self, table: str, rows: int) -> int:
        """The rows of ``table``, counting no further than ``rows``: ``min(total, rows)``."""
        if rows <= 0:
            return 0
        t = self.table(table)
        first = sa.select(sa.literal(1)).select_from(t).limit(rows).subquery()
        q = sa.select(sa.func.count()).select_from(first)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    def anchor_range(self, selection: RowSelection) -> tuple[int, Any, Any]:
        """(count, earliest anchor, latest anchor) of the selected records."""
        t = self.table(selection.table)
        conds = self._selection_conditions(selection, HoldSet())
        if selection.anchor_path:
            count = self.count(selection)
            anchor = self.column(selection.anchor_path[-1].target, selection.anchor)
            reached = self.reach(selection.anchor_path, conds)
            span = sa.select(sa.func.min(anchor), sa.func.max(anchor)).where(reached)
            low, high = self._run(lambda c: c.execute(span).one())
            return count, low, high
        anchor = t.c[selection.anchor]
        q = sa.select(sa.func.count(), sa.func.min(anchor), sa.func.max(anchor)).where(*conds)
        row = self._run(lambda c: c.execute(q).one())
        return int(row[0]), row[1], row[2]

    def iter_records(self, selection: RowSelection, columns: Sequence[str]) -> Iterator[list[Record]]:
        """Stream the selected records (held ones included) with the named columns, in key order.

        Records with NULL in any of ``columns`` are left out: they have nothing in that location.
        """
        t = self.table(selection.table)
        key = t.c[selection.key]
        wanted = list(dict.fromkeys([selection.key, selection.subject_column, *columns]))
        cols = [self.column(selection.table, c) for c in wanted]
        conds = self._selection_conditions(selection, HoldSet())
        conds += [t.c[c].is_not(None) for c in columns]
        last: Any = None
        while True:
            q = sa.select(*cols).where(*conds).order_by(key).limit(self.batch_size)
            if last is not None:
                q = q.where(key > last)
            rows = self._run(lambda c, q=q: [dict(r._mapping) for r in c.execute(q)])
            if not rows:
                return
            yield rows
            last = rows[-1][selection.key]

    def iter_path_records(
        self, selection: RowSelection, hops: Sequence[Hop], columns: Sequence[str]
    ) -> Iterator[list[Record]]:
        """Stream the rows the selected records reach through ``hops`` (held ones included), with the
        named columns of the path's last table and, under ``PATH_KEY`` and ``PATH_SUBJECT``, the key
        and subject of the record reaching them: a row reached from two records comes once per record.

        Rows with NULL in any of ``columns`` are left out, and so are records whose path stops at a
        NULL reference: they name nothing there. Batches are ranges of the records' key.
        """
        rec = self.table(selection.table)
        key = rec.c[selection.key]
        joined: sa.FromClause = rec
        at: sa.FromClause = rec
        for i, hop in enumerate(hops):
            # Aliased: the selection's own subqueries (an anchor path) never correlate with the join.
            step = self.table(hop.target).alias(f"path_{i}")
            joined = joined.join(step, at.c[hop.source_column] == step.c[hop.target_column])
            at = step
        wanted = list(dict.fromkeys(columns))
        for name in wanted:
            self.column(hops[-1].target, name)
        cols = [
            key.label(PATH_KEY),
            rec.c[selection.subject_column].label(PATH_SUBJECT),
            *(at.c[name] for name in wanted),
        ]
        conds = self._selection_conditions(selection, HoldSet())
        named = [at.c[name].is_not(None) for name in wanted]
        last: Any = None
        while True:
            kq = sa.select(key).where(*conds).order_by(key).limit(self.batch_size)
            if last is not None:
                kq = kq.where(key > last)
            keys = self._run(lambda c, q=kq: [r[0] for r in c.execute(q)])
            if not keys:
                return
            q = (
                sa.select(*cols)
                .select_from(joined)
                .where(*conds, key >= keys[0], key <= keys[-1], *named)
                .order_by(key)
            )
            rows = self._run(lambda c, q=q: [dict(r._mapping) for r in c.execute(q)])
            if rows:
                yield rows
            last = keys[-1]

    # -- SQL building -----------------------------------------------------------------------------

    def _selection_conditions(
        self, sel: RowSelection, holds: HoldSet, only_subjects: frozenset[str] | None = None
    ) -> list[sa.ColumnElement[bool]]:
        t = self.table(sel.table)
        conds: list[sa.ColumnElement[bool]] = []
        if sel.never_due:
            conds.append(sa.false())
        elif sel.cutoff is not None and sel.anchor_path:
            due = self._due_through(sel, sel.cutoff)
            conds.append(sa.not_(sa.func.coalesce(due, sa.false())) if sel.not_due else due)
        elif sel.cutoff is not None:
            due = self._due(t.c[sel.anchor], sel.cutoff, sel.anchor_zone)
            conds.append(sa.not_(due) | t.c[sel.anchor].is_(None) if sel.not_due else due)
        subject_col = self.column(sel.table, sel.subject_column)
        held = self._coerce_valid(subject_col, holds.subjects)
        values = None if only_subjects is None else self._coerce_valid(subject_col, only_subjects)
        if sel.subject is not None:
            subject = self._coerce(subject_col, sel.subject)
            conds.append(subject_col == subject)
            # With one subject selected only that subject's membership matters: a list of
            # thousands of held subjects would cost more to plan than the query costs to run.
            held = [v for v in held if v == subject]
            values = None if values is None else [v for v in values if v == subject]
        if held:
            conds.append(_in_list(subject_col, held, negate=True) | subject_col.is_(None))
        if values is not None:
            conds.append(_in_list(subject_col, values) if values else sa.false())
        if sel.excluded:
            key = self.column(sel.table, sel.key)
            conds.append(_in_list(key, self._coerce_valid(key, sel.excluded), negate=True))
        return conds

    def _held_condition(self, sel: RowSelection, holds: HoldSet) -> sa.ColumnElement[bool] | None:
        """``subject IN (held)`` on the selection's subject column; None if nothing it selects is held."""
        subject_col = self.column(sel.table, sel.subject_column)
        held = self._coerce_valid(subject_col, holds.subjects)
        if sel.subject is not None:
            subject = self._coerce(subject_col, sel.subject)
            held = [v for v in held if v == subject]
        if not held:
            return None
        # NULL subjects are never held: the comparison must be true or false, never unknown.
        return sa.and_(subject_col.is_not(None), _in_list(subject_col, held))

    def _conditions(
        self,
        target: TableTarget,
        holds: HoldSet,
        only_subjects: frozenset[str] | None = None,
        *,
        references: bool = True,
    ) -> list[sa.ColumnElement[bool]]:
        """Conditions on the *records* table; for a child target, rows having matching children."""
        conds = self._selection_conditions(target.selection, holds, only_subjects)
        referenced = self._referenced(target) if references else None
        if referenced is not None:
            conds.append(sa.not_(referenced))
        if target.table == target.selection.table:
            if target.action == "anonymise":
                conds.append(self._needs_anonymising(self.table(target.table), target.fields))
            return conds
        if target.via:
            # Rows reached through a path: the records are narrowed where the path is applied.
            return conds
        rec = self.table(target.selection.table)
        child = self.table(target.table)
        fk = self.column(target.table, target.foreign_key or "")
        child_q = sa.select(sa.literal(1)).where(fk == rec.c[target.selection.key])
        if target.action == "anonymise":
            child_q = child_q.where(self._needs_anonymising(child, target.fields))
        conds.append(sa.exists(child_q))
        return conds

    def _due_through(self, sel: RowSelection, cutoff: Cutoff) -> sa.ColumnElement[bool]:
        """Records whose anchor lies on a table their path reaches: due when the path reaches at
        least one anchor row and every one it reaches is due (a parent's date: its one row; the
        children's dates: the latest). A NULL reference or a NULL date is never due."""
        table = sel.anchor_path[-1].target
        anchor = self.column(table, sel.anchor)
        due = self._due(anchor, cutoff, sel.anchor_zone)
        not_due = sa.not_(due) | anchor.is_(None)
        return sa.and_(
            sa.func.coalesce(self._back(sel.anchor_path, [due]), sa.false()),
            sa.not_(sa.func.coalesce(self._back(sel.anchor_path, [not_due]), sa.false())),
        )

    def _back(self, hops: Sequence[Hop], where: Sequence[sa.ColumnElement[bool]]) -> sa.ColumnElement[bool]:
        """A condition on the path's first table: rows reaching a last-table row satisfying ``where``."""
        conds: list[sa.ColumnElement[bool]] = list(where)
        for hop in reversed(hops):
            target = self.table(hop.target)
            source = self.table(hop.source)
            sub = sa.select(target.c[hop.target_column]).where(*conds).correlate(None)
            conds = [source.c[hop.source_column].in_(sub)]
        return sa.and_(*conds)

    @staticmethod
    def _due(anchor: sa.Column[Any], cutoff: Cutoff, zone: str | None) -> sa.ColumnElement[bool]:
        """Due under ``cutoff``: a date before its date bound; a timestamp before its instant, which
        for a timestamp without time zone is the wall time in ``zone`` (its values' zone; UTC if
        None), so the database never compares it in its session's zone."""
        python_type = _python_type(anchor)
        if python_type is dt.date:
            return anchor < cutoff.date_bound
        instant: dt.datetime = cutoff.instant
        if not getattr(anchor.type, "timezone", False):
            instant = instant.astimezone(ZoneInfo(zone or "UTC")).replace(tzinfo=None)
        return anchor <= instant if cutoff.inclusive else anchor < instant

    def _needs_anonymising(self, t: sa.Table, fields: Mapping[str, FieldRule]) -> sa.ColumnElement[bool]:
        parts: list[sa.ColumnElement[bool]] = []
        for name, rule in fields.items():
            col = self.column(t.name, name)
            if rule.strategy == "null":
                parts.append(col.is_not(None))
            elif rule.strategy == "pseudonym":
                parts.append(col.is_not(None) & sa.not_(col.startswith(PSEUDONYM_PREFIX, autoescape=True)))
            else:
                parts.append(col.is_not(None) & (col != _replacement(rule)))
        return sa.or_(*parts)

    def _range(self, sel: RowSelection, lo: Any, hi: Any) -> list[sa.ColumnElement[bool]]:
        key = self.table(sel.table).c[sel.key]
        return [key <= hi] if lo is None else [key > lo, key <= hi]

    def _apply(
        self, conn: Connection, target: TableTarget, conds: list[sa.ColumnElement[bool]], holds: HoldSet
    ) -> int:
        t = self.table(target.table)
        if target.table == target.selection.table:
            where: list[sa.ColumnElement[bool]] = conds
        elif target.via:
            where = self._path_rows(target, conds, holds)
        else:
            # A child table: its rows whose foreign key names a selected record (the selection's
            # EXISTS narrowing correlates with the child table, so no path subquery here).
            rec = self.table(target.selection.table)
            fk = t.c[target.foreign_key or ""]
            where = [fk.in_(sa.select(rec.c[target.selection.key]).where(*conds))]
            if target.action == "anonymise":
                where.append(self._needs_anonymising(t, target.fields))
        if target.action == "delete":
            self.statements += 1
            return int(conn.execute(sa.delete(t).where(*where)).rowcount)
        return self._anonymise(conn, t, target, where)

    def _anonymise(
        self, conn: Connection, t: sa.Table, target: TableTarget, where: Sequence[sa.ColumnElement[bool]]
    ) -> int:
        """Replace the target's fields in the rows ``where`` selects: one UPDATE, or keyed pseudonyms."""
        if any(rule.strategy == "pseudonym" for rule in target.fields.values()):
            return self._pseudonymise(conn, t, target, list(where))
        values = {name: _replacement(rule) for name, rule in target.fields.items()}
        self.statements += 1
        return int(conn.execute(sa.update(t).where(*where).values(**values)).rowcount)

    def _pseudonymise(
        self, conn: Connection, t: sa.Table, target: TableTarget, where: list[sa.ColumnElement[bool]]
    ) -> int:
        if not target.pseudonym_key:
            raise TerminalError(f"{target.category}: strategy pseudonym needs the pseudonym key")
        pk = list(t.primary_key.columns)
        if len(pk) != 1:
            raise TerminalError(f"table {t.name!r}: pseudonymising needs a single-column primary key")
        names = list(target.fields)
        stmt = (
            sa.update(t)
            .where(pk[0] == sa.bindparam("_pk"))
            .values({n: sa.bindparam(f"v_{n}") for n in names})
        )
        done = 0
        last: Any = None
        while True:
            # In chunks of ``batch_size`` rows, so memory stays flat however many a range holds.
            q = sa.select(pk[0], *(t.c[n] for n in names)).where(*where).order_by(pk[0])
            if last is not None:
                q = q.where(pk[0] > last)
            rows = conn.execute(q.limit(self.batch_size)).all()
            self.statements += 1
            if not rows:
                return done
            conn.execute(stmt, [self._pseudonyms(t, target, names, row) for row in rows])
            self.statements += 1
            done += len(rows)
            last = rows[-1][0]

    @staticmethod
    def _pseudonyms(t: sa.Table, target: TableTarget, names: Sequence[str], row: Any) -> dict[str, Any]:
        """The UPDATE parameters of one row: its key and each field's new value."""
        key = target.pseudonym_key or b""
        values: dict[str, Any] = {"_pk": row[0]}
        # bind names differ from column names: SQLAlchemy reserves those for SET
        for i, name in enumerate(names):
            rule, value = target.fields[name], row[i + 1]
            if rule.strategy != "pseudonym":
                values[f"v_{name}"] = _replacement(rule)
            elif value is None or str(value).startswith(PSEUDONYM_PREFIX):
                values[f"v_{name}"] = value
            else:
                values[f"v_{name}"] = pseudonymise(key, str(value), namespace=f"{t.name}.{name}")
        return values

    # -- join paths ---------------------------------------------------------------------------------

    def reach(
        self,
        hops: Sequence[Hop],
        records: Sequence[sa.ColumnElement[bool]],
        steps: Sequence[sa.ColumnElement[bool] | None] = (),
    ) -> sa.ColumnElement[bool]:
        """A condition on the last hop's table: its rows reached from the records that satisfy
        ``records``, one ``IN (subquery)`` per hop (tables in between are only read). ``steps[i]``,
        where given, further restricts the rows hop ``i`` arrives at."""
        where: list[sa.ColumnElement[bool]] = list(records)
        for i, hop in enumerate(hops):
            source = self.table(hop.source)
            target = self.table(hop.target)
            sub = sa.select(source.c[hop.source_column]).where(*where).correlate(None)
            where = [target.c[hop.target_column].in_(sub)]
            step = steps[i] if i < len(steps) else None
            if step is not None:
                where.append(step)
        return sa.and_(*where)

    def own_rows(
        self, target: TableTarget, conds: Sequence[sa.ColumnElement[bool]], holds: HoldSet
    ) -> sa.ColumnElement[bool]:
        """The rows of a path target that the records satisfying ``conds`` reach and that are theirs alone.

        A row is theirs alone when nothing but the selection's own path rows references it, at
        the path's end and at every step where paths converge (a step from referencing rows to the
        row they reference: an address two customers use). What references it otherwise (another
        customer's row, a record held or not due, any other table) makes it shared. The selection
        is the whole run's (``_conditions`` with the holds), whatever range ``conds`` covers.
        With ``shared: erase`` every reached row counts as the selection's.
        """
        if target.shared == "erase":
            return self.reach(target.hops, conds)
        full = self._conditions(target, holds)
        hops = target.hops
        steps: list[sa.ColumnElement[bool] | None] = []
        for i, hop in enumerate(hops[:-1]):
            found = self.schema().link(hop.source, hop.source_column, hop.target, hop.target_column)
            if found is None or found[0] == "child":
                steps.append(None)
                continue
            own_source = self._prefix(hops, i, full, steps)
            steps.append(sa.not_(self._shared_at(hop, own_source, downstream=hops[i + 1])))
        last = len(hops) - 1
        shared = self._shared_at(hops[last], self._prefix(hops, last, full, steps))
        return sa.and_(self.reach(hops, conds, steps), sa.not_(shared))

    def _prefix(
        self,
        hops: Sequence[Hop],
        i: int,
        full: Sequence[sa.ColumnElement[bool]],
        steps: Sequence[sa.ColumnElement[bool] | None],
    ) -> sa.ColumnElement[bool]:
        """The rows of hop ``i``'s source table that are the selection's own (the records for hop 0)."""
        return self.reach(hops[:i], full, steps[:i]) if i else sa.and_(*full)

    def _shared_at(
        self, hop: Hop, own_source: sa.ColumnElement[bool], downstream: Hop | None = None
    ) -> sa.ColumnElement[bool]:
        """Rows of ``hop.target`` that a row references, through any foreign key of the schema, other
        than the rows of ``hop.source`` satisfying ``own_source`` through the hop's own column, and
        the rows the path goes on to (``downstream``, when they reference these)."""
        t = self.table(hop.target)
        refs: list[sa.ColumnElement[bool]] = []
        for child, fk in self.schema().referencing(hop.target):
            if downstream is not None and (child, fk.columns) == (
                downstream.target,
                (downstream.target_column,),
            ):
                continue
            if len(fk.columns) != 1:
                refs.append(sa.true())  # a composite reference cannot be followed: keep
                continue
            x = self.table(child).alias(f"ref_{hop.target}_{len(refs)}")
            q = (
                sa.select(sa.literal(1))
                .select_from(x)
                .where(x.c[fk.columns[0]] == t.c[fk.referred_columns[0]])
            )
            inner = self.table(child)
            pk = [c.name for c in inner.primary_key.columns]
            if child == hop.source and fk.columns[0] == hop.source_column and len(pk) == 1:
                # The path's own step: references from the selection's own rows do not count
                # (those rows by their primary key; without a single-column one, all count).
                own = sa.select(inner.c[pk[0]]).where(own_source).correlate(None)
                q = q.where(sa.not_(sa.func.coalesce(x.c[pk[0]].in_(own), sa.false())))
            refs.append(sa.exists(q))
        return sa.or_(*refs) if refs else sa.false()

    def _path_rows(
        self, target: TableTarget, conds: Sequence[sa.ColumnElement[bool]], holds: HoldSet
    ) -> list[sa.ColumnElement[bool]]:
        """The rows of a path target the action applies to: the selection's own, not yet anonymised."""
        where = [self.own_rows(target, conds, holds)]
        if target.action == "anonymise":
            where.append(self._needs_anonymising(self.table(target.table), target.fields))
        return where

    def _shared_reached(
        self, target: TableTarget, conds: Sequence[sa.ColumnElement[bool]], holds: HoldSet
    ) -> list[sa.ColumnElement[bool]]:
        """The rows of a path target that ``conds`` reach but that are not the selection's own."""
        own = self.own_rows(target, conds, holds)
        return [self.reach(target.hops, conds), sa.not_(sa.func.coalesce(own, sa.false()))]

    def _anonymise_shared(
        self, conn: Connection, target: TableTarget, conds: list[sa.ColumnElement[bool]], holds: HoldSet
    ) -> int:
        """``shared: anonymise`` on a delete location: the shared rows the batch reaches are anonymised."""
        t = self.table(target.table)
        where = [*self._shared_reached(target, conds, holds), self._needs_anonymising(t, target.fields)]
        return self._anonymise(conn, t, target, where)

    def _verify_path(self, target: TableTarget, holds: HoldSet) -> VerifyOutcome:
        """Looking again at a path target: what the selection reaches and should be gone (or
        anonymised) is remaining; shared rows kept and rows of held subjects are kept."""
        t = self.table(target.table)
        conds = self._conditions(target, holds)
        remaining = self._count_where(t, self._path_rows(target, conds, holds))
        kept_shared = 0
        if target.shared == "anonymise" and target.action == "delete":
            shared = [*self._shared_reached(target, conds, holds), self._needs_anonymising(t, target.fields)]
            remaining += self._count_where(t, shared)
        elif target.shared == "keep":
            kept_shared = self._count_where(t, self._shared_reached(target, conds, holds))
        kept = 0
        if holds.subjects:
            only_held = self._conditions(target, HoldSet(), only_subjects=holds.subjects, references=False)
            kept = self._count_where(t, [self.reach(target.hops, only_held)])
        return VerifyOutcome(remaining=remaining, kept=kept, shared=kept_shared)

    def _count_where(self, t: sa.Table, where: Sequence[sa.ColumnElement[bool]]) -> int:
        q = sa.select(sa.func.count()).select_from(t).where(*where)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    def _count(self, target: TableTarget, conds: list[sa.ColumnElement[bool]]) -> int:
        rec = self.table(target.selection.table)
        if target.table == target.selection.table:
            q = sa.select(sa.func.count()).select_from(rec).where(*conds)
        else:
            t = self.table(target.table)
            fk = t.c[target.foreign_key or ""]
            where: list[sa.ColumnElement[bool]] = [
                fk.in_(sa.select(rec.c[target.selection.key]).where(*conds))
            ]
            if target.action == "anonymise":
                where.append(self._needs_anonymising(t, target.fields))
            q = sa.select(sa.func.count()).select_from(t).where(*where)
        return int(self._run(lambda c: c.execute(q).scalar_one()))

    def _count_held(self, target: TableTarget, holds: HoldSet, batch: Batch[KeyRange]) -> int:
        if not holds.subjects:
            return 0
        total = 0
        for lo, hi in batch.items:
            conds = [
                *self._conditions(target, HoldSet(), only_subjects=holds.subjects),
                *self._range(target.selection, lo, hi),
            ]
            total += self._count(target, conds)
        return total

    @staticmethod
    def _coerce(col: sa.Column[Any], value: str) -> Any:
        python_type = _python_type(col)
        if python_type is int:
            text = str(value).strip()
            if not (text.isascii() and text.isdigit()):  # "١٢٣".isdigit() is True, and int() accepts it
                raise TerminalError(f"subject value is not valid for integer column {col.name!r}")
            return int(text)
        return str(value)

    @staticmethod
    def _coerce_valid(col: sa.Column[Any], values: frozenset[str]) -> list[Any]:
        """The values valid for ``col`` (read as ``_coerce`` does), sorted so one set gives one SQL text."""
        return list(_valid_values(_python_type(col) is int, values))

    def _run(self, fn: Any, *, write: bool = False) -> Any:
        """Run ``fn(connection)`` in its own transaction; database errors become ``dberrors.classify``'s."""
        with db_errors("database adapter"), self.engine.begin() as conn:
            result = fn(conn)
        if not write:
            self.statements += 1
        return result

    # -- reading one subject's rows (the access report; read-only) ------------------------------------

    def iter_reached_rows(
        self, selection: RowSelection, hops: Sequence[Hop] = (), *, mark_shared: bool = False
    ) -> Iterator[list[tuple[dict[str, Any], bool]]]:
        """Stream every column of the rows of a location's table that the selected records reach
        through ``hops`` (none: the records themselves), held ones included, in the order of the
        table's single-column primary key (the records key for the records table), each with
        whether it is shared: with ``mark_shared``, a path's row that something besides the
        selection's own path rows references (another customer's row, any other table), as
        ``own_rows`` decides for erasure. One keyset query a batch, driven by the selection (for a
        subject, its index); nothing is changed.
        """
        name = hops[-1].target if hops else selection.table
        t = self.table(name)
        order = self._reached_order(t, selection)
        conds = self._selection_conditions(selection, HoldSet())
        where = [self.reach(hops, conds)] if hops else conds
        own: sa.ColumnElement[bool] = sa.true()
        if hops and mark_shared:
            target = TableTarget(
                category="", selection=selection, table=name, action="delete", hops=tuple(hops), via=True
            )
            own = sa.func.coalesce(self.own_rows(target, conds, HoldSet()), sa.false())
        cols = list(t.columns)
        names = [c.name for c in cols]
        at = names.index(order.name)
        last: Any = None
        while True:
            q = sa.select(*cols, own).where(*where).order_by(order).limit(self.batch_size)
            if last is not None:
                q = q.where(order > last)
            rows = self._run(lambda c, q=q: [tuple(r) for r in c.execute(q)])
            if not rows:
                return
            yield [(dict(zip(names, r[:-1], strict=True)), not r[-1]) for r in rows]
            last = rows[-1][at]

    def _reached_order(self, t: sa.Table, selection: RowSelection) -> sa.Column[Any]:
        """The column ``iter_reached_rows`` pages ``t`` by: its one-column primary key, or the records key."""
        pk = list(t.primary_key.columns)
        if len(pk) == 1:
            return pk[0]
        if t.name == selection.table:
            return self.column(t.name, selection.key)
        raise TerminalError(f"table {t.name!r} has no single-column primary key to read its rows in order")


_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")


@functools.lru_cache(maxsize=16)
def _valid_values(integers: bool, values: frozenset[str]) -> tuple[Any, ...]:
    # Cached: the holds are read again before every erase, and are nearly always the same set.
    if not integers:
        return tuple(sorted({str(v) for v in values}))
    # Only the canonical text of an integer (ASCII digits, an optional minus, no padding or
    # leading zero) stands for it: anything else names no row of an integer column.
    return tuple(sorted({int(t) for t in map(str, values) if _CANONICAL_INT.fullmatch(t)}))


def _in_list(col: sa.Column[Any], values: Sequence[Any], *, negate: bool = False) -> sa.ColumnElement[bool]:
    """``col [NOT] IN (...)`` with the values written into the SQL text as constants.

    Thousands of held subjects as bound parameters cost more than the statement's own work
    (the driver parses every placeholder, on every execution), and a server-side prepared
    plan cannot hash an IN list of parameters the way it hashes one of constants. Integers
    are written out once, so the compiled statement is cached; other values are rendered by
    the dialect's own quoting on each execution.
    """
    text = _integer_list(tuple(values))
    if text is not None:
        listed: sa.ColumnElement[Any] = sa.literal_column(text)
        return col.op("NOT IN" if negate else "IN", is_comparison=True)(listed)
    param: sa.BindParameter[Any] = sa.bindparam(None, list(values), expanding=True, literal_execute=True)
    return col.not_in(param) if negate else col.in_(param)


@functools.lru_cache(maxsize=16)
def _integer_list(values: tuple[Any, ...]) -> str | None:
    """``(1, 2, 3)`` if every value is an integer, else None. Cached: the held subjects are written
    into every statement of a run, and are nearly always the same list."""
    if all(type(v) is int for v in values):
        return "(" + ", ".join(str(v) for v in values) + ")"
    return None


@dataclass
class _RangeWalk:
    """The ranges ``named`` yields: where the next one starts and how wide it is."""

    lo: int
    end: int
    width: int
    rows: int
    """The rows a range should hold."""

    def observe(self, rows: int) -> None:
        """Size the next range from the rows this one held: at most 8 times wider or narrower."""
        if rows <= 0:
            self.width *= 8
            return
        wanted = self.width * self.rows // rows
        self.width = max(1, self.width // 8, min(self.width * 8, wanted))


def _fetch_keys(conn: Connection, query: sa.Select[Any]) -> list[Any]:
    """The first column of ``query``'s rows, in order; on PostgreSQL as one array.

    One array value is read several times faster than thousands of one-column rows.
    """
    if conn.dialect.name != "postgresql":
        return list(conn.execute(query).scalars().all())
    sub = query.subquery()
    col = sub.c[0]
    keys = conn.execute(sa.select(sa.func.array_agg(aggregate_order_by(col, col)))).scalar_one()
    return list(keys or [])


def _replacement(rule: FieldRule) -> str | None:
    if rule.strategy == "null":
        return None
    if rule.strategy == "redact":
        return REDACTED
    return rule.value


def _python_type(col: sa.Column[Any]) -> type:
    try:
        python_type: type = col.type.python_type
    except NotImplementedError:
        return object
    if python_type is dt.datetime:
        return dt.datetime
    return python_type


def _coerced_row(cols: Sequence[sa.Column[Any]], texts: Sequence[str]) -> tuple[Any, ...] | None:
    """Parsed texts as the columns' values; ``()`` when no row could hold them, None when unknowable."""
    out: list[Any] = []
    for col, text in zip(cols, texts, strict=True):
        kind = _python_type(col)
        if kind is int:
            if not _CANONICAL_INT.fullmatch(text):
                return ()
            out.append(int(text))
        elif kind is str:
            out.append(text)
        else:
            return None
    return tuple(out)


def _named_keys(
    template: str, names: Sequence[str], rows: Sequence[tuple[Any, ...]], keys: Sequence[str], exact: bool
) -> set[str]:
    """The keys that the rows' rendered templates name."""
    rendered: set[str] = set()
    for row in rows:
        try:
            rendered.add(render(template, dict(zip(names, row, strict=True))))
        except UnsafeTargetError:
            continue
    if exact:
        return {k for k in keys if k in rendered}
    return {k for k in keys if any(p in rendered for p in naming_prefixes(k))}
